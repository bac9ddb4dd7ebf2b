"""The in-process transport and runner, and the ``FedGenGMM`` / ``FederatedEM`` facades above them."""

from fedgmm.inprocess.estimators import FederatedEM, FedGenGMM, check_clients
from fedgmm.inprocess.runner import MethodRun, run_inprocess
from fedgmm.inprocess.transport import InProcessTransport

__all__ = ["FedGenGMM", "FederatedEM", "InProcessTransport", "MethodRun", "check_clients", "run_inprocess"]
