"""``jobledger web``: a read-only view of a ledger in a browser, and the same data as JSON.

Starlette serves server-rendered Jinja2 pages (no front-end build, nothing fetched
from elsewhere; one small script refreshes a page in place):

* :mod:`.reads`: each page's data, from indexed, bounded reads (the :class:`~.reads.Board`);
* :mod:`.app`: the routes, the pages and ``/api``; escaping and security headers;
* :mod:`.auth`: the optional shared secret (bearer token or basic auth);
* :mod:`.background`: the queue figures' catch-up and the periodic verify;
* :mod:`.timeline`: a job's timeline drawn as SVG;
* :mod:`.serve`: putting it together and running it under uvicorn.

Needs the ``web`` extra (``pip install 'jobledger[web]'``).
"""
