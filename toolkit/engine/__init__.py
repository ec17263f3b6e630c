"""The torch optimization engine (GReaTer). Heavy imports happen inside functions."""
