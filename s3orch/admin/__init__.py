"""The admin API (``/admin/api/``): routes in one table (:mod:`.routes`), served by :mod:`.app`."""
