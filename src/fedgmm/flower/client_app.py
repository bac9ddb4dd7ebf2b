"""The ClientApp: one handler per request kind, each decoding the message and calling ``handle_request``."""

from __future__ import annotations

from flwr.app import Context, Message
from flwr.clientapp import ClientApp

from fedgmm.federated.client import DOWNLOAD, EM_STATISTICS, FIT_LOCAL, MOMENTS, handle_request
from fedgmm.federated.messages import decode_request
from fedgmm.flower.store import StateStore
from fedgmm.flower.task import node_data

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
        ``node_config`` chooses the node's data (:func:`fedgmm.flower.task.node_data`);
        ``state`` keeps the client's store between the messages of a run.

    Returns
    -------
    Message
        The reply. Exceptions propagate: Flower turns them into an error reply that the
        server records against this node.
    """
    requested = decode_request(message.content)[0]
    if requested != kind:
        raise ValueError(f"a {message.metadata.message_type!r} message carries a {requested!r} request.")
    data = node_data(context.node_config, context.run_config)
    reply = handle_request(message.content, data.X, data.client_id, StateStore(context.state))
    return Message(content=reply, reply_to=message)


@app.train("fit_local")
def fit_local(message: Message, context: Context) -> Message:
    """FedGenGMM's (and the EM initialisations') upload: fit the local GMM, send it."""
    return serve(FIT_LOCAL, message, context)


@app.train("em_statistics")
def em_statistics(message: Message, context: Context) -> Message:
    """Federated EM: E-step statistics of the broadcast mixture on the local rows."""
    return serve(EM_STATISTICS, message, context)


@app.query("moments")
def moments(message: Message, context: Context) -> Message:
    """Federated preprocessing: the local count, sum and outer-product sum."""
    return serve(MOMENTS, message, context)


@app.query("download")
def download(message: Message, context: Context) -> Message:
    """Keep the global model in the node's state; acknowledge."""
    return serve(DOWNLOAD, message, context)
