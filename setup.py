"""Packaging for vitpose_hf (src layout)."""
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent
about = {}
exec((ROOT / "src" / "vitpose_hf" / "version.py").read_text(), about)

install_requires = [
    # torch first: on CPU-only machines install torch==<local wheel> before this package,
    # the range below is then already satisfied and nothing else is pulled in.
    "torch>=2.1",
    "transformers>=5.0,<6",
    "accelerate>=1.0",
    "datasets>=3.0",
    "evaluate>=0.4",
    "safetensors>=0.4",
    "pycocotools>=2.0.7",
    "pillow>=10.1",  # ImageFont.load_default(size=) for the video tags
    "numpy>=1.24",
    "tqdm>=4.60",
    "opencv-python-headless>=4.8",  # crops, synthetic data, detector pre-processing
]

extras = {
    "detector": ["onnxruntime>=1.16"],
    # ONNX export (torch.onnx's dynamo exporter needs onnx + onnxscript) and the onnxruntime backend;
    # torch itself stays as pinned above (nothing newer is pulled in through this extra)
    "onnx": ["onnx>=1.16", "onnxscript>=0.2", "onnxruntime>=1.17"],
    "peft": ["peft>=0.10"],
    # video tracking: scipy's Hungarian assignment (linear_sum_assignment)
    "video": ["scipy>=1.10"],
}
extras["dev"] = sorted(
    {
        "pytest>=7.4",
        "pytest-timeout>=2.2",
        "hypothesis>=6.80",
        "scipy>=1.10",
        # the video benchmark and tests score tracking with the MOT metrics library
        "motmetrics>=1.4",
        *extras["detector"],
        *extras["onnx"],
        *extras["peft"],
        *extras["video"],
    }
)
extras["all"] = sorted({dep for deps in extras.values() for dep in deps})

setup(
    name="vitpose_hf",
    version=about["__version__"],
    description="ViTPose and ViTPose++ human pose estimation, native to the Hugging Face stack: "
    "inference, training, conversion and evaluation.",
    long_description=(ROOT / "README.md").read_text(encoding="utf-8"),
    long_description_content_type="text/markdown",
    license="Apache-2.0",
    # examples/ is installed as the package vitpose_hf.recipes: the example scripts are the recipes
    # that `vitpose-hf train` runs, one file for both (see docs/architecture.md)
    package_dir={"": "src", "vitpose_hf.recipes": "examples"},
    packages=[*find_packages("src"), "vitpose_hf.recipes"],
    include_package_data=True,
    python_requires=">=3.10",
    install_requires=install_requires,
    extras_require=extras,
    entry_points={"console_scripts": ["vitpose-hf=vitpose_hf.cli:main"]},
    classifiers=[
        "Programming Language :: Python :: 3",
        "Topic :: Scientific/Engineering :: Artificial Intelligence",
    ],
)
