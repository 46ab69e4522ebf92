"""The permission service: owner of users and their trading permissions.

permissions.py  the record (pure)        checks.py  the trade check (pure)
store.py        SQLite, the only writer  demo.py    the demo users seeded on first start
servicer.py     gRPC adapter             app.py     Config and build_app for the bootstrap
"""
