"""What tests (ours, and those of tools built on visionbench) use to exercise the kernel without
a real engine: ``fake_engine``."""
