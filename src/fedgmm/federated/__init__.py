"""Federation: the method spec and dispatch, each algorithm's client and server steps, wire format, transport interface."""

from fedgmm.federated.dispatch import FederatedRun, run_method
from fedgmm.federated.spec import METHODS, MethodSpec
from fedgmm.federated.transport import ClientBehaviour, ClientRecord, CommunicationLog

__all__ = ["METHODS", "ClientBehaviour", "ClientRecord", "CommunicationLog", "FederatedRun", "MethodSpec", "run_method"]
