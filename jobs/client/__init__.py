"""jobs.client: submit jobs to a job server (queen, hive, worker) and follow their streams.

    async with JobClient("http://127.0.0.1:7833") as client:
        state = await client.submit_and_stream({"operation": "queen_status"}, print)

`JobClient` is for servers and anything already running an event loop; `SyncJobClient`
is its blocking twin for a program that follows one job at a time (the keeper). Both
decode the stream with `SSEDecoder`, in batches. The client imports the vocabulary
(`jobs`) and nothing of the server side.
"""

from jobs.client._client import EventHandler, JobClient, SyncJobClient, tls_for
from jobs.client._decoder import SSEDecoder

__all__ = ["EventHandler", "JobClient", "SSEDecoder", "SyncJobClient", "tls_for"]
