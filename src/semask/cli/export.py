"""``semask export MODEL_OR_CHECKPOINT --format onnx OUT.onnx [--size H W] [--opset N] [--num-classes K]``.

Writes whole-image inference (normalised (B, 3, H, W) images -> (B, K, H, W) logits; per-class scores for the
mask-classification models: Mask2Former, MaskFormer, FaPN and MSFaPN Mask2Former) with dynamic batch, height and
width, then checks onnxruntime against PyTorch on a random input of another size when onnxruntime is present.

``--format hf OUT_DIR``: a Hugging Face ``transformers`` folder (``config.json`` with the class names as
``id2label``, ``model.safetensors``) of a plain Mask2Former-Swin, MaskFormer-Swin or SegFormer model, for
``from_pretrained`` (:func:`semask.convert.hf.to_hf`).
"""

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a model to ONNX (full-resolution logits, dynamic B/H/W)")
    p.add_argument("model", help="architecture name (see `semask list`), run folder or checkpoint")
    p.add_argument("--format", choices=["onnx", "hf"], default="onnx")
    p.add_argument("out", help="output file, e.g. model.onnx (--format hf: a folder)")
    p.add_argument("--size", type=int, nargs=2, metavar=("H", "W"), default=(512, 512), help="tracing size")
    p.add_argument("--opset", type=int, help="ONNX opset (default 17)")
    p.add_argument("--num-classes", type=int, help="classes K of an architecture (default: its own)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import torch

    from semask.tools.export import export_onnx, onnx_max_rel_diff
    from semask.weights import load

    fields = {} if args.num_classes is None else {"num_classes": args.num_classes}
    if args.format == "hf":
        from semask.convert.hf import to_hf, write_hf_dir

        model, info = load(args.model, with_info=True, **fields)
        out = write_hf_dir(args.out, *to_hf(model, info.get("classes")))
        print(f"wrote {out}/config.json and {out}/model.safetensors (transformers from_pretrained)")
        return 0
    model = load(args.model, **fields)
    path = export_onnx(model, args.out, tuple(args.size), args.opset)
    print(f"wrote {path} (input 'images' (B, 3, H, W) -> output 'logits' (B, K, H, W))")
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        print("onnxruntime not installed: skipped the check against PyTorch")
        return 0
    h, w = args.size
    check = torch.randn(1, 3, h + 13, w + 29, generator=torch.Generator().manual_seed(0))
    diff = onnx_max_rel_diff(path, model, check)
    print(f"onnxruntime vs PyTorch at {h + 13}x{w + 29}: max rel diff {diff:.2e}")
    return 0
