"""Mask-classification decoders of the SeMask detectron2 projects (SPEC A7): pixel decoders (MaskFormer's FPN,
Mask2Former's MSDeformAttn encoder, FaPN, MSFaPN) and predictors (MaskFormer's DETR decoder, Mask2Former's masked
attention decoder). Their criterion and matcher are in :mod:`semask.losses`."""
