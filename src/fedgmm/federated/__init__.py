"""Federated algorithms: FedGenGMM (one-shot), federated EM, baselines, transports and accounting."""

from fedgmm.federated.estimators import FederatedEM, FedGenGMM, check_clients
from fedgmm.federated.transport import ClientRecord, CommunicationLog

__all__ = ["ClientRecord", "CommunicationLog", "FedGenGMM", "FederatedEM", "check_clients"]
