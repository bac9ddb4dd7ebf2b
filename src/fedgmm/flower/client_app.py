"""The ClientApp: one handler per request kind, each decoding the message and calling ``handle_request``."""

from __future__ import annotations

from collections.abc import Mapping, MutableMapping
from typing import Any

from flwr.app import Context, Message, RecordDict
from flwr.client.mod import secaggplus_mod
from flwr.clientapp import ClientApp

from fedgmm.attacks import attack_layers, parse_attack
from fedgmm.federated.client import DOWNLOAD, EM_STATISTICS, FIT_LOCAL, MOMENTS, handle_request
from fedgmm.federated.messages import decode_request
from fedgmm.flower.secure import serve_secure
from fedgmm.flower.settings import SettingsError
from fedgmm.flower.store import StateStore
from fedgmm.flower.task import node_data

#: Node-config key naming the attack an adversarial node plays (:func:`fedgmm.attacks.parse_attack`).
ATTACK_KEY = "attack"
#: Store-key prefix of the attack layers' counters (one ``context.state`` per node and run).
ATTACK_STATE = "attack-state"

app = ClientApp()


def serve(kind: str, message: Message, context: Context) -> Message:
    """Answer one request of ``kind`` from this node's data; the client logic is ``handle_request``.

    Parameters
    ----------
    kind : str
        The request kind the handler was registered for; a message whose content names
        another kind is refused.
    message : Message
        From the ServerApp; its content is an ``encode_request`` record dict.
    context : Context
        ``node_config`` chooses the node's data (:func:`fedgmm.flower.task.node_data`) and,
        with ``attack``, makes it an adversarial node (:func:`tampered`); ``state`` keeps
        the client's store between the messages of a run.

    Returns
    -------
    Message
        The reply. Exceptions propagate: Flower turns them into an error reply that the
        server records against this node.
    """
    return Message(content=answer(kind, message.content, context), reply_to=message)


def answer(kind: str, request: RecordDict, context: Context) -> RecordDict:
    """The reply content to ``request`` (a ``kind`` request) from this node's data and state."""
    requested = decode_request(request)[0]
    if requested != kind:
        raise ValueError(f"a {kind!r} message carries a {requested!r} request.")
    data = node_data(context.node_config, context.run_config)
    store = StateStore(context.state)
    reply = handle_request(request, data.X, data.client_id, store)
    return tampered(kind, reply, context.node_config, store)


def tampered(kind: str, reply: RecordDict, node_config: Mapping[str, Any], store: MutableMapping[str, Any]) -> RecordDict:
    """The reply an adversarial node sends: ``reply`` forged by its ``attack`` (unchanged for an honest node).

    The attack stack is rebuilt for every message (each may run in a fresh process);
    the counters of stateful layers (the alternating forgery's round) live in ``store``.

    Raises
    ------
    SettingsError
        An ``attack`` that is not a string or does not parse.
    """
    spec = node_config.get(ATTACK_KEY, "")
    if not isinstance(spec, str):
        raise SettingsError(f"node config {ATTACK_KEY!r} must be a quoted attack string, got {spec!r}.")
    try:
        plan = parse_attack(spec)
    except ValueError as exc:
        raise SettingsError(f"node config {ATTACK_KEY!r}: {exc}") from exc
    if not plan:
        return reply
    attack = plan(None)
    layers = attack_layers(attack)
    for depth, layer in enumerate(layers):
        layer.set_state({k: int(store[f"{ATTACK_STATE}:{depth}:{k}"]) for k in layer.get_state()
                         if f"{ATTACK_STATE}:{depth}:{k}" in store})
    forged = attack.tamper(kind, reply)
    for depth, layer in enumerate(layers):
        for key, value in layer.get_state().items():
            store[f"{ATTACK_STATE}:{depth}:{key}"] = int(value)
    return forged


@app.train("fit_local")
def fit_local(message: Message, context: Context) -> Message:
    """FedGenGMM's (and the EM initialisations') upload: fit the local GMM, send it."""
    return serve(FIT_LOCAL, message, context)


@app.train("em_statistics")
def em_statistics(message: Message, context: Context) -> Message:
    """Federated EM: E-step statistics of the broadcast mixture on the local rows."""
    return serve(EM_STATISTICS, message, context)


@app.train(mods=[secaggplus_mod])
def secure_em_statistics(message: Message, context: Context) -> Message:
    """Federated EM under secure aggregation: SecAgg+'s stages; in its collect stage, the masked statistics.

    SecAgg+'s mod acts on messages of type ``train`` exactly (the plain handlers'
    ``train.<name>`` types pass it by), so its stages land here.
    """
    return serve_secure(message, context, lambda request: answer(EM_STATISTICS, request, context))


@app.query("moments")
def moments(message: Message, context: Context) -> Message:
    """Federated preprocessing: the local count, sum and outer-product sum."""
    return serve(MOMENTS, message, context)


@app.query("download")
def download(message: Message, context: Context) -> Message:
    """Keep the global model in the node's state; acknowledge."""
    return serve(DOWNLOAD, message, context)
