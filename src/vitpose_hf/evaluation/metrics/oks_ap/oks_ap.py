"""OKS AP: COCO keypoint average precision (pycocotools) as a Hugging Face `evaluate` metric.

Load it offline by name, ``vitpose_hf.evaluation.load_metric("oks_ap")``, or by path:
``evaluate.load(vitpose_hf.evaluation.OKS_AP_METRIC_PATH)``.
The numbers are those of `vitpose_hf.evaluation.coco_keypoint_eval` on the same data.
"""

import datasets
import evaluate

from vitpose_hf.evaluation.coco import coco_keypoint_eval, from_metric_rows

_DESCRIPTION = """\
Object keypoint similarity (OKS) based average precision and recall of multi-person keypoint
predictions, computed with pycocotools' COCOeval(iouType="keypoints") and the OKS sigmas of a
keypoint schema (COCO by default; "crowdpose", "aic", ... or explicit floats). Returns AP, AP50,
AP75, APm, APl, AR, AR50, AR75, ARm, ARl (pycocotools gives -1 where no ground truth exists,
e.g. APm without medium persons; no predictions at all give 0.0 everywhere).
"""

_KWARGS_DESCRIPTION = """\
Args:
    predictions: one row per image: {"image_id": int, "keypoints": list of P lists of 3K floats
        [x1, y1, s1, ...], "scores": list of P person scores}.
    references: one row per image, in the same order: {"image_id": int, "keypoints": G lists of 3K
        floats [x, y, v] (v > 0 = labelled), "bboxes": G [x, y, w, h], "areas": G floats or None
        (None: bbox area * 0.53 as for CrowdPose/AIC), "iscrowd": G ints}.
    sigmas: OKS sigmas: schema name, list of K floats, or None (COCO for K = 17).
Returns:
    dict with AP, AP50, AP75, APm, APl, AR, AR50, AR75, ARm, ARl.
Example:
    >>> from vitpose_hf.evaluation import OKS_AP_METRIC_PATH
    >>> from vitpose_hf.evaluation.coco import to_metric_rows
    >>> metric = evaluate.load(OKS_AP_METRIC_PATH)
    >>> predictions, references = to_metric_rows("test_coco.json", coco_results)
    >>> metric.compute(predictions=predictions, references=references)["AP"]
"""

_CITATION = """\
@inproceedings{lin2014microsoft,
  title={Microsoft COCO: Common Objects in Context},
  author={Lin, Tsung-Yi and Maire, Michael and Belongie, Serge and others},
  booktitle={ECCV},
  year={2014}
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class OksAp(evaluate.Metric):
    """COCO keypoint OKS AP/AR over per-image rows of predictions and references."""

    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=datasets.Features(
                {
                    "predictions": {
                        "image_id": datasets.Value("int64"),
                        "keypoints": datasets.Sequence(datasets.Sequence(datasets.Value("float64"))),
                        "scores": datasets.Sequence(datasets.Value("float64")),
                    },
                    "references": {
                        "image_id": datasets.Value("int64"),
                        "keypoints": datasets.Sequence(datasets.Sequence(datasets.Value("float64"))),
                        "bboxes": datasets.Sequence(datasets.Sequence(datasets.Value("float64"))),
                        "areas": datasets.Sequence(datasets.Value("float64")),
                        "iscrowd": datasets.Sequence(datasets.Value("int64")),
                    },
                }
            ),
            reference_urls=["https://cocodataset.org/#keypoints-eval"],
        )

    def _compute(self, predictions, references, sigmas=None, use_area=None):
        gt, results, rows_use_area = from_metric_rows(predictions, references)
        return coco_keypoint_eval(gt, results, sigmas=sigmas, use_area=rows_use_area if use_area is None else use_area)
