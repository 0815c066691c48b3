"""Training losses: the SeMask-FPN CE pair (L1 + 0.4 L2), the mask-classification set criterion, its Hungarian matcher and point sampling."""
