"""Run a suite's groups on a Dask cluster (the `dask` extra): an existing scheduler
(`--cluster tcp://HOST:8786`) or a local cluster of worker processes on 127.0.0.1
(`--workers N`).

Each group is one task (`work.train_and_evaluate`); results stream back as groups finish and
the driver commits them, so the driver stays the store's only writer. Groups that want a GPU
(`--device cuda`) ask for the Dask resource `GPU=1` and so run only on workers started with
`--resources GPU=1`; other groups run anywhere. A worker that dies mid-group has its task
rescheduled by Dask on another worker, at most ALLOWED_FAILURES times; a result is committed
once, whichever attempt produced it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from .errors import UserError

ALLOWED_FAILURES = 3  # worker deaths tolerated per group before the suite stops with an error
TOPIC = "mlplab-progress"


class WorkerProgress:
    """The progress callback of a group on a worker: its epoch events go to the driver (tagged
    with the group); batch events stay on the worker (too many to send)."""

    def __init__(self, index: int, label: str):
        self.index, self.label = index, label

    def __call__(self, e: dict) -> None:
        if e["event"] in ("epoch", "log"):
            from distributed import get_worker

            get_worker().log_event(TOPIC, {**e, "group": self.index, "label": self.label})


def tls_security(ca: str | None, cert: str | None, key: str | None):
    """distributed's Security for a tls:// scheduler from PEM files (all three or none)."""
    given = [x for x in (ca, cert, key) if x]
    if not given:
        return None
    if len(given) != 3:
        raise UserError("--tls-ca, --tls-cert and --tls-key go together: give all three")
    from distributed.security import Security

    return Security(tls_ca_file=ca, tls_client_cert=cert, tls_client_key=key, require_encryption=True)


def plain_tcp_warning(address: str) -> str | None:
    """A warning for an unencrypted scheduler that is not on this machine: whoever reaches it can
    run code on its workers (and read what they send)."""
    import ipaddress

    scheme, _, rest = address.rpartition("://")
    host = rest.rsplit(":", 1)[0].strip("[]")
    try:  # only a loopback address is this machine: "127.evil.example" is a host name
        local = host == "localhost" or ipaddress.ip_address(host).is_loopback
    except ValueError:
        local = False
    if scheme in ("", "tcp", "ws") and not local:  # ws:// is unencrypted too
        return (f"warning: {address} is unencrypted ({scheme or 'tcp'}://) to another machine: "
                "anyone who can reach that scheduler can run code on its workers; use a tls:// "
                "scheduler (--tls-ca/--tls-cert/--tls-key)")
    return None


def connect(cluster: str | None, workers: int | None, security=None, emit=lambda e: None):
    """(client, local cluster or None): a scheduler at `cluster`, or `workers` local processes."""
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError:
        raise UserError("--cluster/--workers need the dask extra: pip install 'mlplab[dask]'") from None
    dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES})
    if cluster:
        if cluster.startswith("tls://") and security is None:
            raise UserError(f"--cluster {cluster}: a tls:// scheduler needs --tls-ca, --tls-cert and "
                            "--tls-key")
        warning = plain_tcp_warning(cluster)
        if warning:
            emit({"event": "log", "message": warning})
        try:
            return Client(cluster, timeout="20s", security=security), None
        except (OSError, TimeoutError) as e:
            raise UserError(f"--cluster {cluster}: no Dask scheduler answered ({e})") from None
    if workers is None or workers < 1:
        raise UserError(f"--workers must be a positive count, got {workers}")
    # silence_logs: the workers' and nannies' shutdown warnings (a cancelled task, a worker
    # killed after 4 s when the user pressed Ctrl-C) are not news; errors still show
    levels = [(h, h.level) for h in logging.getLogger("distributed").handlers]
    local = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                         host="127.0.0.1", dashboard_address=None, silence_logs=logging.ERROR)
    local.mlplab_log_levels = levels  # put back by `disconnect`: the caller's logging is theirs
    return Client(local), local


def disconnect(client, local) -> None:
    """Close what `connect` opened, and give the caller's logging back as it was."""
    client.close()
    if local is not None:
        local.close()
        for handler, level in getattr(local, "mlplab_log_levels", []):
            handler.setLevel(level)


def run_groups(numbered, device: str, data_dir: str | None, *, cluster: str | None = None,
               workers: int | None = None, threads: int | None = None,
               progress: Callable[[dict], None] | None = None,
               client=None, security=None, checkpoints=None, stop_at: int | None = None,
               prune: dict[str, int] | None = None, total: int | None = None) -> Iterator[tuple]:
    """Submit every (plan index, group), yield (group, its list of `Trained`, or `Paused` at a
    rung) as each returns. stop_at / prune: successive halving (see `train_group`); total: the
    plan's number of groups (for progress)."""
    from distributed import as_completed

    from .work import train_and_evaluate

    emit = progress or (lambda e: None)
    own = client is None
    local = None
    if own:
        client, local = connect(cluster, workers, security, emit)
    try:
        resources = {"GPU": 1} if device == "cuda" else None
        # workers report each epoch to the driver through Dask's event log
        client.subscribe_topic(TOPIC, lambda event: emit(event[1]))
        futures = {}
        total = total or len(numbered)
        for gi, group in numbered:
            fut = client.submit(train_and_evaluate, list(group.cfgs), device, data_dir,
                                WorkerProgress(gi, group.label), threads, checkpoints,
                                stop_at=stop_at, prune=prune, resources=resources, pure=False,
                                key=f"mlplab-group-{gi}-{stop_at or 'end'}-{group.cfgs[0].run_id}")
            futures[fut] = (gi, group)
        emit({"event": "log", "message": f"{len(futures)} groups submitted to "
              f"{client.scheduler.address} ({len(client.scheduler_info()['workers'])} workers)"})
        for fut in as_completed(futures):
            gi, group = futures[fut]
            try:
                trained = fut.result()
            except Exception as e:  # KilledWorker after ALLOWED_FAILURES, or an error in the task
                raise RuntimeError(f"group {gi + 1} ({group.label}) failed on the cluster: "
                                   f"{type(e).__name__}: {e}") from e
            if isinstance(trained, list):  # not paused at a rung: done
                emit({"event": "group_done", "index": gi, "groups": total,
                      "label": group.label, "epochs": max(c.epochs for c in group.cfgs)})
            yield group, trained
    finally:
        if own:
            disconnect(client, local)
