"""Demo data for `make run`: a super-admin, the tenants acme and globex, and a few studies."""

import datetime
import io
import os
import secrets
from pathlib import Path

import numpy as np
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.management.base import BaseCommand, CommandError
from django.utils import timezone
from django_tenants.utils import schema_context
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, MRImageStorage, generate_uid

from accounts.models import User
from accounts.services import user_create
from configuration.models import RemoteNode
from studies.ingest import ingest_item_stage, ingest_job_create, ingest_job_submit
from studies.models import IngestSource, Study
from tenants import services
from tenants.links import public_base_url, tenant_base_url
from tenants.models import Tenant

# Synthetic patients only; each study is (patient, birth date, sex, description, series).
DEMO_STUDIES = {
    "acme": [
        ("DOE^JANE", "19800214", "F", "CT CHEST", [("CT", "Axial 5mm", 4), ("CT", "Coronal", 3)]),
        ("ROE^RICHARD", "19651103", "M", "MR BRAIN", [("MR", "T1 SAG", 3), ("MR", "T2 AX", 3)]),
    ],
    "globex": [
        ("SMITH^ALEX", "19921230", "O", "CT ABDOMEN", [("CT", "Venous phase", 4)]),
        ("MUSTERMANN^ERIKA", "19740521", "F", "MR KNEE", [("MR", "PD FS", 3), ("MR", "T1", 2)]),
        ("TANAKA^HIRO", "20010909", "M", "CT HEAD", [("CT", "Brain window", 3)]),
    ],
}
SIDE = 64


def synthetic_instance(study: Dataset, modality: str, series: Dataset, number: int) -> bytes:
    """A 64x64 16-bit image: a bright disc whose size changes along the series."""
    ds = Dataset()
    ds.update(study)
    ds.update(series)
    sop_class = CTImageStorage if modality == "CT" else MRImageStorage
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, generate_uid()
    ds.InstanceNumber = number
    ds.Rows = ds.Columns = SIDE
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
    y, x = np.mgrid[:SIDE, :SIDE]
    radius = 10 + 4 * number
    disc = ((x - SIDE / 2) ** 2 + (y - SIDE / 2) ** 2) < radius**2
    pixels = (200 + 8 * x + disc * 1500).astype(np.uint16)
    ds.PixelData = pixels.tobytes()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    out = io.BytesIO()
    ds.save_as(out, enforce_file_format=True)
    return out.getvalue()


def demo_files(slug: str) -> list[tuple[str, bytes]]:
    """The demo studies of a tenant as DICOM files (fresh UIDs on every call)."""
    files = []
    today = timezone.localdate()
    for index, (name, birth, sex, description, series_list) in enumerate(DEMO_STUDIES[slug]):
        study = Dataset()
        study.PatientName, study.PatientID = name, f"{slug.upper()}-{1000 + index}"
        study.PatientBirthDate, study.PatientSex = birth, sex
        study.StudyInstanceUID = generate_uid()
        study.StudyDate = (today - datetime.timedelta(days=3 * index + 1)).strftime("%Y%m%d")
        study.StudyTime, study.StudyID = "101500", str(index + 1)
        study.AccessionNumber = f"{slug[:3].upper()}{20240 + index}"
        study.StudyDescription = description
        study.ReferringPhysicianName = "HOUSE^GREGORY"
        for number, (modality, series_description, count) in enumerate(series_list, start=1):
            series = Dataset()
            series.Modality, series.SeriesInstanceUID = modality, generate_uid()
            series.SeriesNumber, series.SeriesDescription = number, series_description
            for instance in range(1, count + 1):
                data = synthetic_instance(study, modality, series, instance)
                files.append((f"{name.split('^')[0].lower()}-{number}-{instance}.dcm", data))
    return files


def demo_studies_seed(tenant: Tenant) -> int:
    """Send the tenant's demo studies through the real ingest pipeline, unless it has studies."""
    if Study.objects.exists():
        return 0
    job = ingest_job_create(source=IngestSource.UPLOAD, description="demo studies")
    for name, data in demo_files(tenant.slug):
        ingest_item_stage(job=job, name=name, stream=io.BytesIO(data))
    return ingest_job_submit(job=job, run_now=True).stored


# DCMTK's tools call with these titles by default; listed at this machine, the README's
# findscu / getscu / movescu examples work on `make run` (Query/Retrieve is closed to
# unlisted peers).
DEMO_QUERY_NODES = ("FINDSCU", "GETSCU", "MOVESCU")


def demo_nodes_seed() -> None:
    for title in DEMO_QUERY_NODES:
        RemoteNode.objects.get_or_create(
            ae_title=title,
            host="127.0.0.1",
            defaults={"port": 104, "description": "DCMTK tools on this machine (demo)"},
        )


DEMO_TENANTS = [("acme", "Acme Hospital", "ACME"), ("globex", "Globex Clinic", "GLOBEX")]


def demo_password() -> str:
    """PORTAL_DEMO_PASSWORD, else one generated once and kept under .var/ for later runs."""
    if os.environ.get("PORTAL_DEMO_PASSWORD"):
        return os.environ["PORTAL_DEMO_PASSWORD"]
    stored = Path(settings.BASE_DIR) / ".var" / "demo-password"
    if stored.is_file():
        return stored.read_text().strip()
    stored.parent.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(12)
    stored.write_text(password + "\n")
    stored.chmod(0o600)
    return password


def _ensure_user(username: str, email: str, password: str, **extra: object) -> None:
    user = User.objects.filter(username=username).first()
    if user is None:
        user_create(username=username, email=email, password=password, **extra)  # type: ignore[arg-type]
    elif not user.check_password(password):
        user.set_password(password)
        user.save(update_fields=["password"])


class Command(BaseCommand):
    help = (
        "Create the demo super-admin and tenants acme and globex with their admins "
        "(login 'admin'). Development only: refuses to run unless DEBUG is on."
    )

    def handle(self, *args, **options):
        if not settings.DEBUG:
            raise CommandError("demo accounts exist only in development (DEBUG=true).")
        password = demo_password()
        _ensure_user("admin", f"admin@{settings.PORTAL_BASE_DOMAIN}", password, is_superuser=True)
        lines = [f"  super-admin  {public_base_url()}/   login admin / {password}"]
        for slug, name, ae_title in DEMO_TENANTS:
            tenant = Tenant.all_objects.filter(slug=slug).first()
            if tenant is not None and not tenant.is_usable:
                lines.append(f"  {slug:<11}  is {tenant.status}; not touched")
                continue
            if tenant is None:
                tenant = self._create(slug, name, ae_title, password)
            with schema_context(tenant.schema_name):
                _ensure_user("admin", f"admin@{slug}.example", password, role="admin")
                stored = demo_studies_seed(tenant)
                demo_nodes_seed()
            if stored:
                lines.append(f"  {slug:<11}  received {stored} demo images")
            lines.append(
                f"  {slug:<11}  {tenant_base_url(tenant)}/   login admin / {password}"
                f"   (AE title {tenant.ae_title})"
            )
        self.stdout.write("Demo accounts (development only):\n" + "\n".join(lines))

    def _create(self, slug: str, name: str, ae_title: str, password: str) -> Tenant:
        try:
            return services.tenant_create(
                slug=slug,
                name=name,
                ae_title=ae_title,
                admin_email=f"admin@{slug}.example",
                admin_password=password,
                created_by="demo",
            ).tenant
        except ValidationError as error:
            raise CommandError(
                f"cannot create demo tenant {slug}: {'; '.join(error.messages)} "
                "(left over from an earlier database? `make clean` starts afresh)"
            ) from None
