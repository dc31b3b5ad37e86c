"""Input data for measurements and INT8 calibration."""
