"""The labeling app: labelers rank model outputs in a Gradio page; rankings feed the reward model.

Modules: config.py (the `label` stage config), auth.py (password hashing, session tokens), store.py
(SQLite in WAL mode, append-only records), items.py (loading or generating items), service.py (the
server-side API: every call checks its session token and role), export.py (rankings and pairs for the
reward stage), agreement.py (inter-labeler statistics), app.py (the Gradio page and `alignment label`).
"""
