"""Ready-made connections of a middleware to other libraries' hooks.

- ``gateway_metrics.integrations.litellm``: a LiteLLM ``CustomLogger``
  (``pip install 'gateway-metrics[litellm]'``).
"""
