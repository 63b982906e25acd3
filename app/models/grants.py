"""What a request may spend of what the operator shares among keys: the model cache (downloads
and pins: KEY_LIMITS `models` and `max_downloads`) and the operator's S3 and Azure credentials
(S3_BUCKETS, AZURE_STORAGE_CONTAINERS).

Checked where a request comes in, before anything is taken: by the job door for a graph and its
options (a model URL in a graph, or in a workflow's field, which reaches the graph, is a
download; an `s3` upload names a bucket, an `azure_blob_upload` a container), by the model
routes for `POST /models/download`. A refusal is located at what asked: 403 for a grant the key
lacks, 400 for a bucket or container the gateway does not serve. The model store and the
uploader check buckets again where they use them.
"""

from __future__ import annotations

from app.comfy.graph import Graph
from app.comfy.model_inputs import is_model_url, model_inputs
from app.core.addresses import AddressPolicy, AddressRefused
from app.core.download_auth import S3Auth, first_match
from app.core.downloads import ModelDownloadRequest
from app.core.errors import Forbidden, InvalidRequest
from app.core.keys import ANONYMOUS, UNNAMED_ID, Caller, split_entry
from app.core.limits import ModelsGrant, limit_for, models_grant
from app.core.options import JobOptions
from app.core.s3 import Buckets
from app.core.settings import Settings
from app.models.credentials import Credentials

OPENED_BY = "KEY_LIMITS `models` opens downloads per key; admin keys may download"


class Grants:
    """The model grants of each key (KEY_LIMITS) and the S3 buckets (S3_BUCKETS)."""

    def __init__(self, settings: Settings) -> None:
        self.limits = settings.key_limits
        self.buckets = Buckets.from_settings(settings)
        self.azure = bool(
            settings.azure_storage_connection_string or settings.azure_storage_account
        )
        self.containers = frozenset(settings.azure_storage_containers)
        self.admin_ids = frozenset(
            split_entry(key.get_secret_value()).id for key in settings.admin_api_keys
        )

    def caller_of(self, owner: str | None) -> Caller:
        """The caller a job's owner stands for where only its key's id travels (a job in the
        runner, or taken from a fleet's queue)."""
        if owner is None:
            return ANONYMOUS
        named = UNNAMED_ID.fullmatch(owner) is None
        return Caller(owner, named=named, admin=owner in self.admin_ids)

    def models(self, caller: Caller) -> ModelsGrant:
        return models_grant(self.limits, caller)

    def max_downloads(self, caller: Caller) -> int:
        """The caller's KEY_LIMITS max_downloads (0: no limit)."""
        return limit_for(self.limits, caller).max_downloads

    def check_may_download(self, caller: Caller, where: str = "url") -> None:
        """The key may download models (KEY_LIMITS `models`; admin keys; anyone without keys)."""
        if self.models(caller) == "none":
            raise Forbidden(f"{where}: this API key may not download models ({OPENED_BY})",
                            location=where)  # fmt: skip

    def check_download(self, caller: Caller, body: ModelDownloadRequest) -> None:
        """POST /models/download: the key may download (and pin, when it asks), from a bucket
        the gateway serves."""
        grant = self.models(caller)
        if grant == "none":
            raise Forbidden(f"url: this API key may not download models ({OPENED_BY})",
                            location="url")  # fmt: skip
        if body.pin and grant != "pin":
            raise Forbidden(
                "pin: this API key may download models but not pin them (KEY_LIMITS `models: "
                "pin` opens it; admin keys may)",
                location="pin",
            )
        self.buckets.check_url(body.url, "url")

    def check_job(self, caller: Caller, graph: Graph, options: JobOptions | None) -> None:
        """A job: every model URL in its graph is a download of the key's; its `s3` bucket."""
        grant = self.models(caller)
        for node_id, name, _, value in model_inputs(graph):
            if not is_model_url(value):
                continue
            where = f"prompt.{node_id}.inputs.{name}"
            if grant == "none":
                raise Forbidden(
                    f"{where}: this API key may not download models: name an installed file, "
                    f"not a URL ({OPENED_BY})",
                    location=where,
                )
            if not isinstance(first_match(options.credentials if options else None, value), S3Auth):
                self.buckets.check_url(value, where)  # the operator's AWS credentials read it
        if options is not None and options.s3 is not None:
            self.buckets.check(options.s3.bucket, "s3.bucket")
        if options is not None and options.azure_blob_upload is not None:
            self.check_container(options.azure_blob_upload.container)

    def check_container(self, container: str) -> None:
        """An `azure_blob_upload`: Azure is set up, and the container is one it serves."""
        where = "azure_blob_upload.container"
        if not self.azure:
            raise InvalidRequest(
                "azure_blob_upload: this gateway has no Azure Storage account (set "
                "AZURE_STORAGE_CONNECTION_STRING or AZURE_STORAGE_ACCOUNT)",
                location="azure_blob_upload",
            )
        if self.containers and container not in self.containers:
            served = ", ".join(sorted(self.containers))
            raise InvalidRequest(
                f"{where}: the container {container!r} is not one this gateway's Azure "
                f"credentials serve (AZURE_STORAGE_CONTAINERS: {served})",
                location=where,
            )

    async def check_s3(
        self, url: str, credentials: Credentials, addresses: AddressPolicy, where: str
    ) -> None:
        """An `s3://` URL read with the operator's AWS credentials names a bucket they serve
        (S3_BUCKETS); one read with a client's own `s3` auth is the client's business, but
        the endpoint it names passes the address policy."""
        if not url.lower().startswith("s3://"):
            return
        auth = credentials.s3_auth(url)
        if auth is None:
            self.buckets.check_url(url, where)
        elif auth.endpoint:
            try:
                await addresses.check(auth.endpoint)
            except AddressRefused as e:
                message = f"{where}: the endpoint of its s3 auth: {e}"
                raise InvalidRequest(message, location=where) from None
