"""The gateway calls services through the chassis's deadline-bound RPC."""
from services.rpc import default_timeout, rpc_call

__all__ = ["default_timeout", "rpc_call"]
