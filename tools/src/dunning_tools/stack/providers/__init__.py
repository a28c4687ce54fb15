"""Local stand-ins for the providers that cannot be reached from a laptop or CI, in one process.

Each speaks its real provider's HTTP API (paths, authentication, form or JSON bodies, status codes,
signed callbacks) and records what it got, so the notifier's adapters are exercised exactly as the
provider would see them. One FastAPI app, one port (`make run` prints it), a router per provider:

- `twilio.py`: Twilio's Messages API (SMS) and its signed status callbacks;
- `printmail.py`: a print-and-mail provider's letters API, keeping the PDFs;
- `hooks.py`: a receiver of outbound webhooks (endpoints a tenant or an agency would run), keeping
  every request with its headers so a test can verify it with the `standardwebhooks` package.

State is kept under the directory given (`--dir`), so a restart of the stand-in loses nothing.
"""
