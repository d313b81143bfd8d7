"""Static files storage for production (collectstatic, served by WhiteNoise)."""

from __future__ import annotations

from whitenoise.storage import CompressedManifestStaticFilesStorage


class StaticStorage(CompressedManifestStaticFilesStorage):
    """WhiteNoise's hashed and compressed files, with ES module imports rewritten too.

    The viewer (static/sam3web/viewer.js) is split into ES modules that import one another by
    relative path. Only the entry is named in a template, through {% static %}; its imports are
    resolved by the browser. Without this flag the hashed viewer.<hash>.js would still import
    "./viewer/core.js", the unhashed name: WhiteNoise gives that a short cache lifetime (each
    visit asks again), and around a deploy a page could mix a new entry with old modules. With
    it, collectstatic rewrites each `import ... from "./x.js"` to the hashed name, as it does
    for url() in CSS, and every module is cached for good like the entry."""

    support_js_module_import_aggregation = True
