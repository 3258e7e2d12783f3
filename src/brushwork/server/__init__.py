"""The brushwork web app (``brushwork serve``): a REST API and a web page over the Python API.

Stylise with any model, keep results in a gallery (SQLAlchemy database, content-addressed image files), read
about the models, and run the preference / deception study of seed 001. ``app.create_app(settings.Settings())``
builds the application; this package imports nothing itself, so the command line starts fast.
"""
