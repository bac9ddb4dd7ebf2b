"""The Flower app: a ServerApp and a ClientApp that run fedgmm's federated algorithms across processes."""
