"""The page's pictures as PNG files that are written once and never rewritten.

Gradio saves a picture returned as an array under its content's hash and rewrites that file in
place each time the same picture comes again; a browser still reading the first copy then gets
fewer bytes than the Content-Length it was promised (net::ERR_CONTENT_LENGTH_MISMATCH). That
happens on every page load, where the Sample tab's first render repeats the pictures the page
was built with. Returned as a path instead, Gradio copies the file into its cache under a
temporary name and renames it into place, and leaves an existing copy alone; this folder does
the same with its own files.
"""

from __future__ import annotations

import atexit
import hashlib
import io
import shutil
import tempfile
import threading
from collections import OrderedDict
from pathlib import Path

import numpy as np
from PIL import Image

from harness.io import atomic_write


class PictureFiles:
    """PNG files of (H, W, C) uint8 pictures, named by their content, in a temporary folder.

    Only the `keep` most recently returned files stay on disk: Gradio copies each one into its
    own cache while answering the event that returned it, so older ones are no longer read.
    """

    def __init__(self, keep: int = 256):
        self.keep = keep
        self.root = Path(tempfile.mkdtemp(prefix="harness-studio-pictures-"))
        atexit.register(shutil.rmtree, self.root, ignore_errors=True)
        self._recent: OrderedDict[Path, None] = OrderedDict()
        self._lock = threading.Lock()  # Gradio answers events on worker threads

    def path_of(self, picture: np.ndarray) -> str:
        """The PNG file showing `picture`, written (to a temporary name, then renamed) only
        when no file of the same content exists."""
        buffer = io.BytesIO()
        Image.fromarray(picture).save(buffer, format="png")
        data = buffer.getvalue()
        path = self.root / f"{hashlib.sha256(data).hexdigest()[:32]}.png"
        with self._lock:
            if not path.exists():
                atomic_write(path, lambda file: file.write(data), size=len(data))
            self._recent.pop(path, None)
            self._recent[path] = None
            while len(self._recent) > self.keep:
                old, _ = self._recent.popitem(last=False)
                old.unlink(missing_ok=True)
        return str(path)
