"""Static files: whitenoise for the collected files, plus the OHIF viewer's own directory.

The viewer's files (`studies/viewer/bundle.py`) are the same for every tenant and hold no
patient data, so they are served like the portal's own CSS, below `STATIC_URL` + `viewer/`;
nginx serves the same directory in a deployment (deploy/).
"""

from pathlib import Path
from typing import Any

from django.conf import settings
from whitenoise.middleware import WhiteNoiseMiddleware


class StaticFilesMiddleware(WhiteNoiseMiddleware):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        viewer = Path(settings.PORTAL_VIEWER_ROOT)
        if viewer.is_dir():
            self.add_files(str(viewer), prefix=f"{self.static_prefix}viewer/")
