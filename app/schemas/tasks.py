"""Batch tasks (DESIGN 10): the page query, and the answers as /openapi.json describes them."""

from marshmallow import RAISE, Schema, fields, validate

from app.schemas.contacts import FAILURE_CODES, ConflictSchema

MAX_TASK_PAGE = 1000
TASK_STATUSES = ["pending", "running", "completed", "completed_with_errors", "cancelled", "failed"]
# deleted: a row of Intercom's bulk delete (DESIGN 12) that erased its contact.
OUTCOME_STATUSES = ["created", "updated", "unchanged", "stale", "failed", "skipped", "deleted"]


class TaskPageQuerySchema(Schema):
    """GET /batch-tasks and /batch-tasks/{id}/results: a page from a cursor."""

    class Meta:
        unknown = RAISE

    cursor = fields.String(metadata={"description": "nextCursor of the previous page."})
    limit = fields.Integer(load_default=100, validate=validate.Range(1, MAX_TASK_PAGE))


class BatchTaskSchema(Schema):
    """A batch task and its progress."""

    id = fields.Integer(required=True)
    kind = fields.String(required=True, validate=validate.OneOf(["contacts.bulk_update",
                                                                  "inro.contacts.bulk",
                                                                  "intercom.contacts.bulk"]))
    status = fields.String(required=True, validate=validate.OneOf(TASK_STATUSES))
    total_count = fields.Integer(data_key="totalCount", required=True)
    processed_count = fields.Integer(data_key="processedCount", required=True)
    created_count = fields.Integer(data_key="createdCount", required=True)
    updated_count = fields.Integer(data_key="updatedCount", required=True)
    unchanged_count = fields.Integer(data_key="unchangedCount", required=True)
    failed_count = fields.Integer(data_key="failedCount", required=True)
    stale_count = fields.Integer(data_key="staleCount", required=True)
    deleted_count = fields.Integer(data_key="deletedCount", required=True, metadata={
        "description": "Rows of a bulk delete (Intercom's door) that erased their contact."})
    progress_percentage = fields.Integer(data_key="progressPercentage", required=True)
    estimated_completion_time = fields.String(data_key="estimatedCompletionTime", required=True,
                                              allow_none=True, metadata={"format": "date-time"})
    created_at = fields.String(data_key="createdAt", required=True, metadata={"format": "date-time"})
    started_at = fields.String(data_key="startedAt", required=True, allow_none=True)
    completed_at = fields.String(data_key="completedAt", required=True, allow_none=True)


class BatchTaskResponseSchema(Schema):
    success = fields.Boolean(required=True)
    data = fields.Nested(BatchTaskSchema, required=True)


class BatchTaskPageResponseSchema(Schema):
    success = fields.Boolean(required=True)
    data = fields.List(fields.Nested(BatchTaskSchema), required=True)
    next_cursor = fields.String(data_key="nextCursor", required=True, allow_none=True)
    has_more = fields.Boolean(data_key="hasMore", required=True)


class RowOutcomeSchema(Schema):
    """One row of a task: its result, and for a failed row its failure."""

    index = fields.Integer(required=True)
    id = fields.Integer(required=True, allow_none=True)
    status = fields.String(required=True, validate=validate.OneOf(OUTCOME_STATUSES))
    changed_fields = fields.List(fields.String(), data_key="changedFields")
    code = fields.String(validate=validate.OneOf(FAILURE_CODES))
    message = fields.String()
    external_id = fields.Raw(data_key="externalId", allow_none=True)
    email = fields.Raw(allow_none=True)
    errors = fields.Raw()
    conflict = fields.Nested(ConflictSchema)


class RowOutcomePageResponseSchema(Schema):
    success = fields.Boolean(required=True)
    data = fields.List(fields.Nested(RowOutcomeSchema), required=True)
    next_cursor = fields.String(data_key="nextCursor", required=True)
    has_more = fields.Boolean(data_key="hasMore", required=True)


class InroTaskSchema(Schema):
    """A batch task in Inrō's words (DESIGN 11)."""

    id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(TASK_STATUSES))
    progress_percentage = fields.Integer(required=True)
    estimated_completion_time = fields.String(required=True, allow_none=True)
    total_count = fields.Integer(required=True)
    processed_count = fields.Integer(required=True)
    failed_count = fields.Integer(required=True)
    created_at = fields.String(required=True)
    completed_at = fields.String(required=True, allow_none=True)


class InroTaskListSchema(Schema):
    batch_tasks = fields.List(fields.Nested(InroTaskSchema), required=True)


class InroQueuedSchema(Schema):
    """PUT /api/v1/contacts/bulk's 202 answer."""

    batch_task_id = fields.String(required=True)
    status = fields.String(required=True, validate=validate.OneOf(TASK_STATUSES))
    accepted_count = fields.Integer(required=True)
    not_found_count = fields.Integer(required=True)
    not_found = fields.List(fields.Dict(), required=True)


task_page_query_schema = TaskPageQuerySchema()
