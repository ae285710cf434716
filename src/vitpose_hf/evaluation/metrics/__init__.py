"""`evaluate` metric scripts shipped with vitpose_hf: `vitpose_hf.evaluation.load_metric("oks_ap")`,
or by path (`evaluate.load(vitpose_hf.evaluation.OKS_AP_METRIC_PATH)`)."""
