"""Run a suite's groups on a Dask cluster (the `dask` extra): an existing scheduler
(`--cluster tcp://HOST:8786`) or a local cluster of worker processes on 127.0.0.1
(`--workers N`).

Each group is one task (`work.train_and_evaluate`); results stream back as groups finish and
the driver commits them, so the driver stays the store's only writer. Groups that want a GPU
(`--device cuda`) ask for the Dask resource `GPU=1` and so run only on workers started with
`--resources GPU=1`; other groups run anywhere. A worker that dies mid-group has its task
rescheduled by Dask on another worker, at most ALLOWED_FAILURES times; a result is committed
once, whichever attempt produced it.

Ctrl-C (or SIGTERM, or a kernel interrupt) in the driver asks every group still training to stop
(`cluster_worker.request_stop`); each writes its last finished epoch and returns what it saved;
the driver commits any group that finished meanwhile, then closes client, workers and scheduler
in that order with distributed's loggers quiet, so the user sees one line. A local cluster's
workers ignore the terminal's Ctrl-C themselves (they would die before saving).
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable, Iterator

from .errors import UserError
from .interrupt import Interrupted, Stopped

ALLOWED_FAILURES = 3  # worker deaths tolerated per group before the suite stops with an error
STOP_WAIT = 60.0  # seconds the driver waits for its groups to save after an interrupt
CLOSE_TIMEOUT = 30  # seconds for client, workers and scheduler to close


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
        raise UserError("cluster and workers need the dask extra: pip install 'mlplab[dask]'") from None
    dask.config.set({"distributed.scheduler.allowed-failures": ALLOWED_FAILURES})
    if cluster:
        if cluster.startswith("tls://") and security is None:
            raise UserError(f"cluster {cluster}: a tls:// scheduler needs security (the CLI's --tls-ca, "
                            "--tls-cert and --tls-key)")
        warning = plain_tcp_warning(cluster)
        if warning:
            emit({"event": "log", "message": warning})
        try:
            return Client(cluster, timeout="20s", security=security), None
        except (OSError, TimeoutError, ValueError) as e:  # ValueError: an address Dask cannot parse
            raise UserError(f"cluster {cluster}: no Dask scheduler answered ({e})") from None
    if workers is None or workers < 1:
        raise UserError(f"workers must be a positive count, got {workers}")
    from .cluster_worker import IgnoreInterrupt

    # silence_logs (the workers' processes, and this one's handlers until the cluster closes):
    # every failure that matters reaches the user through its task (an error, KilledWorker);
    # distributed's own lines (heartbeats, a cancelled task, a restarted worker) are not news
    local = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                         host="127.0.0.1", dashboard_address=None, silence_logs=logging.CRITICAL,
                         # its HTTP server on a free port of 127.0.0.1: never a warning that 8787
                         # is taken (by another run), never on every interface
                         scheduler_kwargs={"dashboard": False, "dashboard_address": "127.0.0.1:0"})
    client = Client(local)
    client.register_plugin(IgnoreInterrupt())
    return client, local


def disconnect(client, local) -> None:
    """Stop what still trains (it saves first), then close the client, the workers and the
    scheduler, in that order (no heartbeat left in flight), with distributed's loggers quiet
    until all is down; the caller's logging is put back as it was."""
    with quiet("distributed"):
        running = getattr(client, "mlplab_running", None)
        if running:  # interrupted outside `run_groups` (while the driver committed a group)
            _stop(client, *running)
        with contextlib.suppress(Exception):
            client.close(timeout=CLOSE_TIMEOUT)
        if local is not None:
            with contextlib.suppress(Exception):
                local.close(timeout=CLOSE_TIMEOUT)


@contextlib.contextmanager
def quiet(name: str) -> Iterator[None]:
    """Logger `name` and its handlers at CRITICAL inside the block, as they were afterwards."""
    logger = logging.getLogger(name)
    before = [(logger, logger.level)] + [(h, h.level) for h in logger.handlers]
    for obj, _ in before:
        obj.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for obj, level in before:
            obj.setLevel(level)


def run_groups(numbered, device: str, data_dir: str | None, *, cluster: str | None = None,
               workers: int | None = None, threads: int | None = None,
               progress: Callable[[dict], None] | None = None,
               client=None, security=None, checkpoints=None, rung=None,
               total: int | None = None) -> Iterator[tuple]:
    """Submit every (plan index, group), yield (group, its list of `Trained`, or `Paused` at a
    rung) as each returns. rung: successive halving (a `halving.Rung`); total: the
    plan's number of groups (for progress)."""
    from distributed import as_completed

    from .cluster_worker import TOPIC, WorkerProgress, train_on_worker

    emit = progress or (lambda e: None)
    own = client is None
    local = None
    if own:
        client, local = connect(cluster, workers, security, emit)
    token = uuid.uuid4().hex  # this call's groups, for `request_stop`
    futures: dict = {}
    try:
        resources = {"GPU": 1} if device == "cuda" else None
        # workers report each epoch to the driver through Dask's event log
        client.subscribe_topic(TOPIC, lambda event: emit(event[1]))
        total = total or len(numbered)
        client.mlplab_running = (token, futures)  # what `disconnect` stops if we cannot
        stop = rung.epoch if rung else None
        for gi, group in numbered:
            fut = client.submit(train_on_worker, token, list(group.cfgs), device, data_dir,
                                WorkerProgress(gi, group.label, token), threads, checkpoints,
                                rung=rung, resources=resources, pure=False,
                                key=f"mlplab-group-{gi}-{stop or 'end'}-{group.cfgs[0].run_id}")
            futures[fut] = (gi, group)
        emit({"event": "log", "message": f"{len(futures)} groups submitted to "
              f"{client.scheduler.address} ({len(client.scheduler_info()['workers'])} workers)"})
        for fut in as_completed(list(futures)):
            gi, group = futures.pop(fut)
            try:
                trained = fut.result()
            except Exception as e:  # KilledWorker after ALLOWED_FAILURES, or an error in the task
                raise RuntimeError(f"group {gi + 1} ({group.label}) failed on the cluster: "
                                   f"{type(e).__name__}: {e}") from e
            if isinstance(trained, list):  # not paused at a rung: done
                emit({"event": "group_done", "index": gi, "groups": total,
                      "label": group.label, "epochs": group.epochs})
            yield group, trained
    except KeyboardInterrupt:
        client.mlplab_running = None  # a second Ctrl-C while we wait: out at once
        saved, finished = _stop(client, token, futures)
        for group, trained in finished:  # done before they heard the stop: the caller commits
            yield group, trained
        raise Interrupted(saved) from None
    finally:
        client.mlplab_running = None
        if own:
            disconnect(client, local)


def _stop(client, token: str, futures: dict) -> tuple[list[dict], list[tuple]]:
    """Ask the groups of run `token` to stop and wait (at most STOP_WAIT) until they have saved:
    (what each saved, (group, list of Trained) of those that finished instead)."""
    from distributed import wait

    from .cluster_worker import request_stop

    with contextlib.suppress(Exception):  # a scheduler that is gone has nothing to stop
        client.run(request_stop, token)
    with contextlib.suppress(Exception):
        wait(list(futures), timeout=STOP_WAIT)
    saved, finished = [], []
    for fut, (_, group) in futures.items():
        if fut.status != "finished":  # still running at the deadline, or failed
            fut.cancel()
            continue
        outcome = fut.result()
        if isinstance(outcome, Stopped):
            saved += outcome.saved
        elif isinstance(outcome, list):
            finished.append((group, outcome))
    return saved, finished
