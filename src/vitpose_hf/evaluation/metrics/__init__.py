"""`evaluate` metric scripts shipped with vitpose_hf (load them by path, e.g. `OKS_AP_METRIC_PATH`)."""
