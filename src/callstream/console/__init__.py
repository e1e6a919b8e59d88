"""callstream's web console: a static single-page app served by callstream itself.

The pages (``static/``) hold no data; the app keeps the user's credentials in the tab's
sessionStorage and reads everything through the authenticated REST API and the console's
few data endpoints (``routes.py``). docs/console.md describes the pages.
"""

from callstream.console.routes import console_routes

__all__ = ["console_routes"]
