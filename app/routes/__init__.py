"""HTTP routers: v1 models and operations, the Open Inference Protocol v2, and operational routes."""
