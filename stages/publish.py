"""Commands `publish` and `reseal`: a float16 copy of a finished cache, committed with its record, and
the maintainer's re-seal of a published cache's digests over the same values; `publish-lm-teacher`: a
trained LM teacher's weights in float16, committed with its record."""

from pathlib import Path

import click

from pipeline.cache.ensemble import publish_cache, reseal_published
from pipeline.config import PublishConfig, PublishLMTeacherConfig, from_options
from pipeline.teacher.lm_publish import publish_lm_teacher as publish_lm
from stages.options import config_options, setting_option


@click.command("publish")
@config_options(PublishConfig, flags={"records": "--record"},
                override={"device": setting_option("PUBLISH_DEVICE", "--device", "device", required=True)})
def publish(**options):
    """Write a float16 published copy of a cache, with a record of how it was made."""
    r = publish_cache(from_options(PublishConfig, **options))
    click.echo(f"{r['path']}: {r['bytes'] / 1e6:.1f} MB, teacher {100 * r['teacher_test_acc']:.2f}% on the test set, "
               f"{r['views']} views per image; record in {Path(r['path']).with_suffix('.json')}")


@click.command("reseal")
@click.argument("cache", type=click.Path(path_type=Path))
@click.option("--why", required=True, help="Why it is resealed, for its record.")
def reseal(cache, why):
    """Maintainers: check a published cache made before digests against its record, then seal it with digests."""
    r = reseal_published(cache, why)
    click.echo(f"{cache}: resealed, fingerprint {r['fingerprint']}, teacher {100 * r['teacher_test_acc']:.2f}% on "
               f"the test set as recorded")


@click.command("publish-lm-teacher")
@config_options(PublishLMTeacherConfig,
                override={"device": setting_option("PUBLISH_DEVICE", "--device", "device", required=True)})
def publish_lm_teacher(**options):
    """Write float16 published weights of a trained LM teacher, scored again, with a record of how it was made."""
    r = publish_lm(from_options(PublishLMTeacherConfig, **options))
    click.echo(f"{r['path']}: {r['bytes'] / 1e6:.1f} MB, {r['arch']} ({r['params']:,} parameters), "
               f"{r['test_bits_per_byte']:.3f} test bits per byte in float16; record in "
               f"{Path(r['path']).with_suffix('.json')}")
