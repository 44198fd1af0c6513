"""The Jupyter progress block as a test sees it (shared by test_interrupt and test_studies)."""


def notebook_block(events, monkeypatch) -> str:
    """The title line of the Jupyter progress block after these events (display handle faked)."""
    import IPython.display

    from mlplab.progress import JupyterView

    class Handle:
        def update(self, obj):
            self.html = obj.data

    handle = Handle()
    monkeypatch.setattr(IPython.display, "display", lambda *a, **k: handle)
    view = JupyterView()
    for e in events:
        view(e)
    view.close()
    return handle.html.split("</div>")[0]
