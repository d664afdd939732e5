"""Studies API: the same search, detail and delete as the /studies/ pages."""

from typing import Any

from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import serializers, status, viewsets
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.permissions import Capability, HasCapability
from studies.index import selectors, services
from studies.models import Series, Study


class StudySearchInput(serializers.Serializer):
    patient_name = serializers.CharField(required=False, max_length=324)
    patient_id = serializers.CharField(required=False, max_length=64)
    accession_number = serializers.CharField(required=False, max_length=64)
    date_from = serializers.DateField(required=False)
    date_to = serializers.DateField(required=False)
    modality = serializers.CharField(required=False, max_length=16)
    description = serializers.CharField(required=False, max_length=64)
    sort = serializers.ChoiceField(
        required=False,
        choices=[f"{d}{k}" for k in selectors.STUDY_SORTS for d in ("", "-")],
        default=selectors.DEFAULT_STUDY_SORT,
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if (
            attrs.get("date_from")
            and attrs.get("date_to")
            and attrs["date_from"] > attrs["date_to"]
        ):
            raise serializers.ValidationError({"date_to": "The end date is before the start date."})
        return attrs


class StudyOutput(serializers.ModelSerializer):
    class Meta:
        model = Study
        fields = [
            "study_instance_uid",
            "patient_name",
            "patient_id",
            "patient_birth_date",
            "patient_sex",
            "study_date",
            "study_time",
            "accession_number",
            "study_id",
            "description",
            "referring_physician_name",
            "modalities",
            "num_series",
            "num_instances",
            "size_bytes",
            "received_at",
        ]
        read_only_fields = fields


class SeriesOutput(serializers.ModelSerializer):
    media = serializers.ListField(child=serializers.CharField(), read_only=True)
    thumbnail_available = serializers.SerializerMethodField()

    class Meta:
        model = Series
        fields = [
            "series_instance_uid",
            "modality",
            "series_number",
            "description",
            "body_part_examined",
            "num_instances",
            "size_bytes",
            "media",
            "thumbnail_available",
            "thumbnail_error",
        ]
        read_only_fields = fields

    def get_thumbnail_available(self, series: Series) -> bool:
        return bool(series.thumbnail)


class StudyDetailOutput(StudyOutput):
    series = serializers.SerializerMethodField()

    class Meta(StudyOutput.Meta):
        fields = [*StudyOutput.Meta.fields, "series"]
        read_only_fields = fields

    @extend_schema(responses=SeriesOutput(many=True))
    def get_series(self, study: Study) -> list[dict[str, Any]]:
        return SeriesOutput(selectors.study_series(study=study), many=True).data  # type: ignore[return-value]


class StudyViewSet(viewsets.GenericViewSet):
    """Studies of this tenant. Every role reads them; admins and operators delete them."""

    permission_classes = [HasCapability]
    capability = Capability.STUDIES_VIEW
    capabilities = {
        "list": Capability.STUDIES_VIEW,
        "retrieve": Capability.STUDIES_VIEW,
        "destroy": Capability.STUDIES_MANAGE,
    }
    serializer_class = StudyOutput
    filter_backends: list[Any] = []
    lookup_field = "study_instance_uid"
    lookup_value_regex = r"[0-9][0-9.]{0,63}"
    http_method_names = ["get", "delete", "head", "options"]

    def get_queryset(self) -> Any:
        return Study.objects.all()

    def get_object(self) -> Study:
        study = selectors.study_get(study_instance_uid=self.kwargs["study_instance_uid"])
        if study is None:
            raise Http404("No such study.")
        return study

    @extend_schema(parameters=[StudySearchInput], responses=StudyOutput(many=True))
    def list(self, request: Request) -> Response:
        criteria = StudySearchInput(data=request.query_params)
        criteria.is_valid(raise_exception=True)
        page = self.paginate_queryset(selectors.study_search(**criteria.validated_data))
        return self.get_paginated_response(StudyOutput(page, many=True).data)

    @extend_schema(responses=StudyDetailOutput)
    def retrieve(self, request: Request, study_instance_uid: str) -> Response:
        study = self.get_object()
        services.study_view_record(study=study, request=request._request)
        return Response(StudyDetailOutput(study).data)

    @extend_schema(request=None, responses={204: None})
    def destroy(self, request: Request, study_instance_uid: str) -> Response:
        services.study_delete(study=self.get_object(), request=request._request)
        return Response(status=status.HTTP_204_NO_CONTENT)
