"""Vector stores, their files and file batches, search results, and the requests that make them."""

from typing import Annotated, Literal, Self

from pydantic import Field, StringConstraints, model_validator

from schemas.assistants import CodeInterpreterResources, FileSearchResources, ToolResources
from schemas.common import Metadata, RequestModel, WireModel

AttributeValue = Annotated[str, StringConstraints(max_length=512)] | bool | int | float
Attributes = Annotated[
    dict[Annotated[str, StringConstraints(max_length=64)], AttributeValue],
    Field(
        max_length=16,
        description="Up to 16 pairs; keys <= 64 chars; values strings (<= 512), numbers, booleans.",
    ),
]

DEFAULT_MAX_CHUNK_TOKENS = 800
DEFAULT_CHUNK_OVERLAP_TOKENS = 400


# --- chunking ---------------------------------------------------------------------------------


class StaticChunking(WireModel):
    """Sizes of a static chunking strategy, in tokens."""

    max_chunk_size_tokens: Annotated[int, Field(ge=100, le=4096)]
    chunk_overlap_tokens: Annotated[int, Field(ge=0)]

    @model_validator(mode="after")
    def _overlap_at_most_half(self) -> Self:
        if self.chunk_overlap_tokens > self.max_chunk_size_tokens // 2:
            raise ValueError(
                "chunk_overlap_tokens must not exceed half of max_chunk_size_tokens"
                f" ({self.chunk_overlap_tokens} > {self.max_chunk_size_tokens} / 2)"
            )
        return self


class StaticChunkingStrategy(WireModel):
    """`{"type": "static", "static": {...}}`."""

    type: Literal["static"] = "static"
    static: StaticChunking


class AutoChunkingStrategy(RequestModel):
    """`{"type": "auto"}`: 800 tokens with 400 of overlap."""

    type: Literal["auto"]


class OtherChunkingStrategy(WireModel):
    """`{"type": "other"}`: how files indexed before chunking strategies were reported."""

    type: Literal["other"] = "other"


ChunkingStrategyParam = Annotated[
    AutoChunkingStrategy | StaticChunkingStrategy, Field(discriminator="type")
]
ChunkingStrategy = Annotated[
    StaticChunkingStrategy | OtherChunkingStrategy, Field(discriminator="type")
]


def resolve_chunking(param: AutoChunkingStrategy | StaticChunkingStrategy | None) -> StaticChunking:
    """The static sizes a request's strategy stands for (`auto` and none: 800 / 400)."""
    if isinstance(param, StaticChunkingStrategy):
        return param.static
    return StaticChunking(
        max_chunk_size_tokens=DEFAULT_MAX_CHUNK_TOKENS,
        chunk_overlap_tokens=DEFAULT_CHUNK_OVERLAP_TOKENS,
    )


# --- objects ----------------------------------------------------------------------------------


class FileCounts(WireModel):
    """How many files of a store or batch are in each status."""

    in_progress: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    total: int = 0


class ExpiresAfter(WireModel):
    """`{"anchor": "last_active_at", "days": N}`."""

    anchor: Literal["last_active_at"]
    days: Annotated[int, Field(ge=1, le=365)]


class VectorStore(WireModel):
    """`object: "vector_store"`: a searchable collection of files."""

    id: str
    object: Literal["vector_store"] = "vector_store"
    created_at: int
    name: str
    usage_bytes: int
    file_counts: FileCounts
    status: Literal["expired", "in_progress", "completed"]
    expires_after: ExpiresAfter | None = None
    expires_at: int | None = None
    last_active_at: int | None = None
    metadata: Metadata | None = None


class VectorStoreFileError(WireModel):
    """Why a file could not be indexed."""

    code: Literal["server_error", "unsupported_file", "invalid_file"]
    message: str


VectorStoreFileStatus = Literal["in_progress", "completed", "cancelled", "failed"]


class VectorStoreFile(WireModel):
    """`object: "vector_store.file"`: a file in a vector store (its id is the File's)."""

    id: str
    object: Literal["vector_store.file"] = "vector_store.file"
    created_at: int
    vector_store_id: str
    status: VectorStoreFileStatus
    last_error: VectorStoreFileError | None = None
    usage_bytes: int
    attributes: dict[str, str | bool | int | float] | None = None
    chunking_strategy: ChunkingStrategy | None = None


class VectorStoreFileBatch(WireModel):
    """`object: "vector_store.files_batch"`: files added together."""

    id: str
    object: Literal["vector_store.files_batch"] = "vector_store.files_batch"
    created_at: int
    vector_store_id: str
    status: Literal["in_progress", "completed", "cancelled", "failed"]
    file_counts: FileCounts


class ContentText(WireModel):
    """A piece of text of a search result or a file's parsed content."""

    type: Literal["text"] = "text"
    text: str


class SearchResult(WireModel):
    """One chunk that matched a search."""

    file_id: str
    filename: str
    score: float
    attributes: dict[str, str | bool | int | float] | None = None
    content: list[ContentText]


class SearchResultsPage(WireModel):
    """`object: "vector_store.search_results.page"` (never paginated)."""

    object: Literal["vector_store.search_results.page"] = "vector_store.search_results.page"
    search_query: list[str]
    data: list[SearchResult]
    has_more: bool = False
    next_page: str | None = None


class FileContentPage(WireModel):
    """`object: "vector_store.file_content.page"`: a file's parsed text."""

    object: Literal["vector_store.file_content.page"] = "vector_store.file_content.page"
    data: list[ContentText]
    has_more: bool = False
    next_page: str | None = None


# --- filters ----------------------------------------------------------------------------------


class ComparisonFilter(RequestModel):
    """Compare one attribute with a value."""

    type: Literal["eq", "ne", "gt", "gte", "lt", "lte", "in", "nin"] = "eq"
    key: str
    value: str | bool | int | float | list[str | int | float]


class CompoundFilter(RequestModel):
    """Combine filters with `and` / `or`."""

    type: Literal["and", "or"]
    filters: Annotated[list["ComparisonFilter | CompoundFilter"], Field(min_length=1)]


Filter = ComparisonFilter | CompoundFilter


# --- requests ---------------------------------------------------------------------------------


class VectorStoreCreate(RequestModel):
    """Body of `POST /vector_stores`."""

    name: str | None = None
    description: str | None = None
    file_ids: Annotated[list[str], Field(max_length=500)] | None = None
    chunking_strategy: ChunkingStrategyParam | None = None
    expires_after: ExpiresAfter | None = None
    metadata: Metadata | None = None


class VectorStoreUpdate(RequestModel):
    """Body of `POST /vector_stores/{id}`: `expires_after: null` removes the policy."""

    name: str | None = None
    expires_after: ExpiresAfter | None = None
    metadata: Metadata | None = None


class VectorStoreFileCreate(RequestModel):
    """Body of `POST /vector_stores/{id}/files`."""

    file_id: str
    attributes: Attributes | None = None
    chunking_strategy: ChunkingStrategyParam | None = None


class VectorStoreFileUpdate(RequestModel):
    """Body of `POST /vector_stores/{id}/files/{file_id}`."""

    attributes: Attributes | None


class BatchFile(RequestModel):
    """One file of a batch, with its own attributes and chunking."""

    file_id: str
    attributes: Attributes | None = None
    chunking_strategy: ChunkingStrategyParam | None = None


class FileBatchCreate(RequestModel):
    """Body of `POST /vector_stores/{id}/file_batches`: `file_ids` or `files`, not both."""

    file_ids: Annotated[list[str], Field(min_length=1, max_length=2000)] | None = None
    files: Annotated[list[BatchFile], Field(min_length=1, max_length=2000)] | None = None
    attributes: Attributes | None = None
    chunking_strategy: ChunkingStrategyParam | None = None

    @model_validator(mode="after")
    def _one_of(self) -> Self:
        if (self.file_ids is None) == (self.files is None):
            raise ValueError("provide exactly one of 'file_ids' or 'files'")
        return self

    def entries(self) -> list[BatchFile]:
        """Every file with its effective attributes and chunking strategy."""
        if self.files is not None:
            return self.files
        return [
            BatchFile(
                file_id=f, attributes=self.attributes, chunking_strategy=self.chunking_strategy
            )
            for f in self.file_ids or []
        ]


class SearchRankingOptions(RequestModel):
    """Ranking options of a vector store search."""

    ranker: Literal["none", "auto", "default-2024-11-15"] = "auto"
    score_threshold: Annotated[float, Field(ge=0, le=1)] = 0.0


class SearchRequest(RequestModel):
    """Body of `POST /vector_stores/{id}/search`."""

    query: (
        Annotated[str, StringConstraints(min_length=1)]
        | Annotated[
            list[Annotated[str, StringConstraints(min_length=1)]],
            Field(min_length=1, max_length=10),
        ]
    )
    filters: Filter | None = None
    max_num_results: Annotated[int, Field(ge=1, le=50)] = 10
    ranking_options: SearchRankingOptions | None = None
    rewrite_query: bool = False

    def queries(self) -> list[str]:
        """The query as a list."""
        return [self.query] if isinstance(self.query, str) else list(self.query)


class VectorStoreHelper(RequestModel):
    """A vector store to create along with an assistant or thread."""

    file_ids: Annotated[list[str], Field(max_length=10_000)] | None = None
    chunking_strategy: ChunkingStrategyParam | None = None
    metadata: Metadata | None = None


class FileSearchResourcesParam(FileSearchResources):
    """`file_search` resources as a request gives them: store ids, or stores to create."""

    vector_stores: Annotated[list[VectorStoreHelper], Field(max_length=1)] | None = None


class ToolResourcesParam(ToolResources):
    """Tool resources of an assistant or thread request."""

    code_interpreter: CodeInterpreterResources | None = None
    file_search: FileSearchResourcesParam | None = None
