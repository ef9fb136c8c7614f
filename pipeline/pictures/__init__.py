"""Pictures: ``tiles`` turns maps into coloured images, ``figures`` lays out evaluation figures
with colour bars, ``explain`` draws what a DPM student believes (per image, per pixel, curves)."""
