"""`manage.py ingest_folder <tenant> <dir>`: import a server folder of DICOM files into a tenant."""

import sys
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django_tenants.utils import tenant_context

from portal.units import size_text
from studies.ingest import (
    JobStaging,
    ingest_items_process,
    ingest_job_create,
    ingest_job_refresh,
)
from studies.models import IngestJob, IngestSource, ItemOutcome
from studies.uploads.services import folder_files, ingest_job_start
from tenants.models import Tenant


class Command(BaseCommand):
    help = (
        "Import every file below DIR into the tenant's archive as one ingest job: files are "
        "staged and processed here, with a progress bar on stderr and a summary of rejected "
        "files. Hidden files are skipped; links leading outside DIR are not followed."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("tenant", help="The tenant's slug.")
        parser.add_argument("directory", type=Path, help="The folder to import.")
        parser.add_argument(
            "--batch",
            type=int,
            default=200,
            help="Files staged and then processed per round, in one index transaction "
            "(bounds the staging space; default 200).",
        )
        parser.add_argument(
            "--dry-run", action="store_true", help="Only list what would be imported."
        )

    def handle(self, *args: Any, **options: Any) -> None:
        tenant = Tenant.all_objects.filter(slug=options["tenant"]).first()
        if tenant is None:
            raise CommandError(f"There is no tenant {options['tenant']!r}.")
        if not tenant.is_usable:
            raise CommandError(f"Tenant {tenant.slug!r} is {tenant.status}; nothing imported.")
        directory: Path = options["directory"]
        if not directory.is_dir():
            raise CommandError(f"{directory} is not a directory.")
        if options["batch"] < 1:
            raise CommandError("--batch must be at least 1.")
        files = list(folder_files(directory))
        if options["dry_run"]:
            size = sum(path.stat().st_size for path in files)
            for path in files:
                self.stdout.write(str(path.relative_to(directory.resolve())))
            self.stdout.write(
                f"Dry run: {len(files)} files ({size_text(size)}) would be imported "
                f"into {tenant.slug}."
            )
            return
        with tenant_context(tenant):
            job = self._import(tenant, directory, files, options["batch"])
            self._summary(job)

    def _import(self, tenant: Tenant, directory: Path, files: list[Path], batch: int) -> IngestJob:
        # The job list is read by operators too: name the folder, not where it is on the server.
        job = ingest_job_create(
            source=IngestSource.FOLDER, description=f"folder {directory.resolve().name}"
        )
        ingest_job_start(job=job)
        root = directory.resolve()
        done = 0
        for start in range(0, len(files), batch):
            staged = []
            with JobStaging(job) as staging:
                for path in files[start : start + batch]:
                    with path.open("rb") as stream:
                        name = str(path.resolve().relative_to(root))
                        staged.append(staging.stage(name=name, stream=stream))
            ingest_items_process(
                item_ids=[item.pk for item in staged if item.outcome == ItemOutcome.PENDING]
            )
            done += len(staged)
            self._progress(job, done, len(files))
        sys.stderr.write("\n")
        return ingest_job_refresh(job_id=job.pk)

    def _progress(self, job: IngestJob, done: int, total: int) -> None:
        job.refresh_from_db(fields=["stored", "duplicates", "rejected"])
        percent = 100 * done / total if total else 100
        self.stderr.write(
            f"\r  {done}/{total} files  {percent:5.1f} %  stored {job.stored} "
            f"duplicate {job.duplicates} rejected {job.rejected}",
            ending="",
        )
        self.stderr.flush()

    def _summary(self, job: IngestJob) -> None:
        self.stdout.write(
            f"Job #{job.pk} {job.status}: {job.total} files, stored {job.stored}, "
            f"duplicate {job.duplicates}, rejected {job.rejected}."
        )
        rejected = job.items.filter(outcome=ItemOutcome.REJECTED).order_by("name")
        if rejected:
            self.stdout.write("Rejected files:")
            for item in rejected:
                self.stdout.write(f"  {item.name}: {item.reason}")
