"""Images in and out: ``intake`` (uploads, URLs and data: URIs a person gives us),
``safe_fetch`` (the one SSRF-safe download loop), ``store`` (one stored image per content),
``masks`` (an engine's masks made our own), ``render`` (overlays and thumbnails), and
``decode``, what they share."""
