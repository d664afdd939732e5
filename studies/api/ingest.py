"""REST ingest: send files (multipart and zips, or one application/dicom body); follow the job."""

from typing import Any

from django.db.models import QuerySet
from django.http import HttpRequest
from django.shortcuts import get_object_or_404
from django.urls import reverse
from drf_spectacular.utils import extend_schema
from rest_framework import generics, serializers, status
from rest_framework.parsers import BaseParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.permissions import Capability, HasCapability, request_token
from studies.ingest import ingest_item_stage, ingest_job_create, ingest_job_submit
from studies.models import IngestItem, IngestJob, IngestSource
from studies.storage import CHUNK
from studies.uploads.handlers import StagingUploadHandler
from studies.uploads.services import (
    UploadRefused,
    ingest_job_items,
    ingest_job_list,
    max_upload_bytes,
    upload_stage_files,
)

DICOM_MEDIA_TYPE = "application/dicom"


class IngestJobOutput(serializers.ModelSerializer):
    # A plain string: an enum here would collide in the schema with the media's `status`.
    status = serializers.CharField(
        read_only=True, help_text="receiving, queued, running, done or failed"
    )
    percent = serializers.IntegerField(read_only=True)
    url = serializers.SerializerMethodField()
    page_url = serializers.SerializerMethodField()
    items_url = serializers.SerializerMethodField()

    class Meta:
        model = IngestJob
        fields = [
            "id",
            "source",
            "status",
            "description",
            "total",
            "stored",
            "duplicates",
            "rejected",
            "percent",
            "error",
            "created_at",
            "finished_at",
            "url",
            "items_url",
            "page_url",
        ]

    def _absolute(self, name: str, job: IngestJob) -> str:
        path = reverse(name, args=[job.pk])
        request = self.context.get("request")
        return request.build_absolute_uri(path) if request else path

    def get_url(self, job: IngestJob) -> str:
        return self._absolute("api_ingest_job", job)

    def get_items_url(self, job: IngestJob) -> str:
        return self._absolute("api_ingest_items", job)

    def get_page_url(self, job: IngestJob) -> str:
        return self._absolute("ingest_job", job)


class IngestItemOutput(serializers.ModelSerializer):
    class Meta:
        model = IngestItem
        fields = [
            "id",
            "name",
            "size_bytes",
            "outcome",
            "reason_code",
            "reason",
            "sop_instance_uid",
            "study_instance_uid",
            "processed_at",
        ]


class DicomStreamParser(BaseParser):
    """Hands the unread body of an application/dicom request to the view, to be streamed."""

    media_type = DICOM_MEDIA_TYPE

    def parse(self, stream: Any, media_type: Any = None, parser_context: Any = None) -> Any:
        return {"stream": stream}


def _chunks(stream: Any) -> Any:
    while chunk := stream.read(CHUNK):
        yield chunk


class IngestCreateView(generics.GenericAPIView):
    """Send DICOM files: multipart (any number of files and zips) or one application/dicom body.

    The files are staged and processed in the background; the answer (202) is the job.
    GET lists the tenant's ingest jobs, newest first.
    """

    permission_classes = [HasCapability]
    capability = Capability.INGEST_STORE
    parser_classes = [MultiPartParser, DicomStreamParser]
    serializer_class = IngestJobOutput
    filterset_fields = ["status", "source"]

    def get_queryset(self) -> QuerySet[IngestJob]:
        return ingest_job_list(token=request_token(self.request))

    @extend_schema(operation_id="v1_ingest_list", responses=IngestJobOutput(many=True))
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(self.filter_queryset(self.get_queryset()))
        serializer = IngestJobOutput(page, many=True, context={"request": request})
        return self.get_paginated_response(serializer.data)

    def initialize_request(self, request: HttpRequest, *args: Any, **kwargs: Any) -> Request:
        request.upload_handlers = [StagingUploadHandler(request)]
        return super().initialize_request(request, *args, **kwargs)

    @extend_schema(request=None, responses={202: IngestJobOutput, 413: None})
    def post(self, request: Request) -> Response:
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        limit = max_upload_bytes()
        if length > limit:
            return Response(
                {"detail": f"The body of {length} bytes is over the limit of {limit} bytes."},
                status=status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            )
        is_dicom = request.content_type.split(";")[0].strip().lower() == DICOM_MEDIA_TYPE
        files = [] if is_dicom else [f for key in request.FILES for f in request.FILES.getlist(key)]
        if not is_dicom and not files:
            raise serializers.ValidationError({"files": ["Send at least one file."]})
        if is_dicom and not length:
            raise serializers.ValidationError({"detail": ["The application/dicom body is empty."]})
        job = ingest_job_create(
            source=IngestSource.REST,
            created_by=request.user,
            token=request_token(request),
            description=str(request.query_params.get("description", "")),
        )
        try:
            if is_dicom:
                ingest_item_stage(
                    job=job,
                    name=str(request.query_params.get("name", "upload.dcm")),
                    stream=_chunks(request.data["stream"]),
                )
            else:
                upload_stage_files(job=job, files=files)
        except UploadRefused:
            job.refresh_from_db()
            return Response(
                IngestJobOutput(job, context={"request": request}).data,
                status=status.HTTP_422_UNPROCESSABLE_ENTITY,
            )
        job = ingest_job_submit(job=job)
        return Response(
            IngestJobOutput(job, context={"request": request}).data,
            status=status.HTTP_202_ACCEPTED,
        )


class IngestJobDetailView(generics.RetrieveAPIView):
    """One ingest job of this tenant: status and counts."""

    permission_classes = [HasCapability]
    capability = Capability.INGEST_STORE
    serializer_class = IngestJobOutput

    def get_queryset(self) -> QuerySet[IngestJob]:
        return ingest_job_list(token=request_token(self.request))


class IngestItemListView(generics.ListAPIView):
    """The files of one job with their outcome and, when rejected, the reason."""

    permission_classes = [HasCapability]
    capability = Capability.INGEST_STORE
    serializer_class = IngestItemOutput
    filterset_fields = ["outcome"]

    def get_queryset(self) -> QuerySet[IngestItem]:
        if getattr(self, "swagger_fake_view", False):
            return IngestItem.objects.none()
        job = get_object_or_404(
            ingest_job_list(token=request_token(self.request)), pk=self.kwargs["pk"]
        )
        return ingest_job_items(job=job)
