"""MMSegmentation 1.x ``MaskFormerHead`` (subclass of mmdet 3.x's): mmdet ``PixelDecoder`` (FPN, GroupNorm 32, no
transformer encoder), ``decoder_input_proj``, sine positions, the 6-layer post-norm DETR decoder with mmdet's module
names, and mmseg's ``predict``. Its criterion (mmdet Hungarian assigner costs + CE / focal / dice) is in
:mod:`semask.losses.mmdet_criterion`."""
