"""``semask serve``: a demo web page and JSON API for one model. :mod:`semask.serve.app` (``create_app``) needs
the ``serve`` extra (``pip install "semask[serve]"``); :mod:`semask.serve.limits` needs nothing."""
