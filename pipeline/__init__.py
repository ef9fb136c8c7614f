"""The library: store format, teachers, DPM, losses, students, metrics."""
