"""``python tests/annotate/serve_tiny.py SEED ARGS...``: ``python -m samjax.annotate ARGS`` with the tests' tiny
random SAM standing in for ``--sam``, in a process of its own (the crash test kills it); prints the URL."""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from modeling.tiny_sams import make  # noqa: E402
from samjax.annotate import __main__ as annotate  # noqa: E402
from samjax.scans.segmenter import Segmenter  # noqa: E402

model = make("vit", seed=int(sys.argv[1]))
Segmenter.from_checkpoint = staticmethod(lambda checkpoint, model_type, preprocessing: Segmenter(
    model, ("background",), 64, preprocessing=preprocessing))
server = annotate.main(sys.argv[2:], serve=False)
print(server.url, flush=True)
server.serve_forever()
