"""Server side: run this checkout's TorchServe, talk to it (predict, scale, rotate keys), load and soak it."""
