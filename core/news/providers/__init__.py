"""The vendor adapters behind the news analysts and reasoning writers: Anthropic and OpenAI through their SDKs,
and the local sentiment model (MiniLM encoder on ONNX Runtime). Each vendor SDK is imported here and nowhere else."""
