"""Every model softcache builds, found here: one front that knows each kind of student and teacher, and a
module per source.

=====================  ===================================================  ================
STUDENT / TEACHER      what builds it                                       family
=====================  ===================================================  ================
``mlp``, ``cnn-tiny``  softcache's own image models (:mod:`.images`)        image
``lm-small``, ...      softcache's own causal LMs (:mod:`.lm`)              text
``timm:<name>``        the timm zoo, ``pretrained=False`` (:mod:`.timm_images`)  image
``hf:<folder|json>``   a transformers causal LM from its config (:mod:`.hf_lm`)  text
``hf-llama-small``...  named transformers presets (:mod:`.hf_lm`)           text
``module:factory``     the user's own code (:mod:`.user_module`)            the stage's
=====================  ===================================================  ================

Whatever builds it, an image student takes float images in [0, 1] shaped (N, C, H, W) and returns (N,
classes) logits; a text student takes int64 (B, L) ids and returns (B, L, V) logits and has ``vocab_size``
and ``context``. Both are checked on one input before any training, so a model that cannot take the data,
or returns the wrong width, is one line. What a checkpoint records (``arch`` and the keyword arguments
here) rebuilds the same model anywhere, without the run that trained it.
"""

from __future__ import annotations

import torch
from torch import nn

from pipeline.errors import UsageError
from pipeline.models.hf_lm import PRESETS as HF_PRESETS
from pipeline.models.hf_lm import build_hf_lm, is_hf_spec, student_config
from pipeline.models.images import (
    Normalize,
    build_image_student,
    build_image_teacher,
    count_params,
    image_students,
    image_teachers,
)
from pipeline.models.lm import build_builtin_lm, builtin_lms, check_lm_sizes
from pipeline.models.user_module import call_factory, is_module_spec, module_digest

__all__ = ["Normalize", "count_params", "create_student", "create_teacher", "create_lm", "list_students",
           "list_teachers", "list_lms", "student_family", "check_student_spec", "student_build_record"]


def list_students() -> list[str]:
    """Every named student: image, text, and the transformers presets (a source prefix adds the rest)."""
    return sorted(image_students()) + builtin_lms() + sorted(HF_PRESETS)


def list_teachers() -> list[str]:
    return image_teachers()


def list_lms() -> list[str]:
    """The named text models: softcache's own and the transformers presets."""
    return builtin_lms() + sorted(HF_PRESETS)


def student_family(spec: str) -> str | None:
    """'image' or 'text' for a spec that says which; None for module:factory (the stage's) or an unknown name."""
    if spec.startswith("timm:") or spec in image_students():
        return "image"
    if is_hf_spec(spec) or spec in builtin_lms():
        return "text"
    return None


def check_student_spec(spec: str, family: str, setting: str = "STUDENT") -> None:
    """Refuse, before any file is read, a student that is unknown or of the other family."""
    if not isinstance(spec, str) or not spec:
        raise UsageError(f"{setting} is empty; choose one of: {', '.join(list_students())}")
    known = student_family(spec)
    if known is None and not is_module_spec(spec):
        raise UsageError(f"{setting}: unknown student '{spec}'; choose one of: {', '.join(list_students())}, "
                         f"timm:<name>, hf:<folder or config.json>, or package.module:factory")
    if known is not None and known != family:
        wanted = ("an image student (" + ", ".join(image_students()) + ", timm:<name> or module:factory)"
                  if family == "image" else
                  "a language-model student (" + ", ".join(list_lms()) + ", hf:<config> or module:factory)")
        have = "an image" if known == "image" else "a language-model"
        raise UsageError(f"{setting}={spec} is {have} student, but this {'image' if family == 'image' else 'text'} "
                         f"data needs {wanted}")


def _check_image_output(model: nn.Module, spec: str, in_shape: tuple, num_classes: int,
                        kind: str = "student") -> nn.Module:
    """One image through the new model before any training: a model too deep for the images, or one whose
    output is not one logit per class, is one line now, not a traceback from inside the first epoch."""
    try:
        with torch.no_grad():
            out = model.eval()(torch.zeros(2, *in_shape))
    except Exception as exc:     # any module's own error for an input it cannot take
        raise UsageError(f"the {kind} '{spec}' cannot take images of shape {tuple(in_shape)} "
                         f"({(str(exc).splitlines() or [''])[0][:160]}); choose another {kind} or a larger "
                         f"IMAGE_SIZE") from None
    finally:
        model.train()
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (2, num_classes):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UsageError(f"the {kind} '{spec}' returns {shape} for 2 images but the data has {num_classes} "
                         f"classes; it must return (N, {num_classes}) logits")
    return model


def create_student(spec: str, *, in_shape=(1, 28, 28), num_classes: int = 10, mean=None, std=None,
                   module_digest: str | None = None) -> nn.Module:
    """An image student for (C, H, W) images and ``num_classes`` classes, normalising with ``mean``/``std``.
    ``module_digest``: a checkpoint's record of a module:factory student's source, which must still match."""
    check_student_spec(spec, "image")
    in_shape = tuple(in_shape)
    if spec.startswith("timm:"):
        from pipeline.models.timm_images import build_timm_student
        model = build_timm_student(spec[5:], in_shape=in_shape, num_classes=num_classes, mean=mean, std=std)
    elif is_module_spec(spec):
        model = _user_model(spec, module_digest, in_shape=in_shape, num_classes=num_classes)
    else:
        model = build_image_student(spec, in_shape=in_shape, num_classes=num_classes, mean=mean, std=std)
    return _check_image_output(model, spec, in_shape, num_classes)


def create_teacher(name: str, **kwargs) -> nn.Module:
    """A registered image teacher. kwargs: in_shape (C, H, W), num_classes, mean, std."""
    model = build_image_teacher(name, **kwargs)
    if kwargs.get("in_shape") is not None:
        _check_image_output(model, name, tuple(kwargs["in_shape"]), kwargs.get("num_classes") or 10, "teacher")
    return model


def create_lm(spec: str, *, vocab_size: int, context: int, hf_config: dict | None = None,
              module_digest: str | None = None, tokenizer_fingerprint: str | None = None) -> nn.Module:
    """A text model for ``vocab_size`` tokens and windows of up to ``context``. ``hf_config``: the config a
    checkpoint recorded (so its folder need not exist any more); ``tokenizer_fingerprint``: the cache's,
    checked against a Hugging Face folder's own tokenizer.json."""
    check_lm_sizes(vocab_size, context)
    if is_hf_spec(spec):
        config = hf_config or student_config(spec, vocab_size=vocab_size, context=context,
                                             tokenizer_fingerprint=tokenizer_fingerprint)
        model = build_hf_lm(config, context)
    elif is_module_spec(spec):
        model = _user_model(spec, module_digest, vocab_size=vocab_size, context=context)
    elif spec in builtin_lms():
        model = build_builtin_lm(spec, vocab_size=vocab_size, context=context)
    else:
        check_student_spec(spec, "text")
        raise UsageError(f"unknown language model '{spec}'; choose one of: {', '.join(list_lms())}")
    return _check_lm_output(model, spec, vocab_size, context)


def _check_lm_output(model: nn.Module, spec: str, vocab_size: int, context: int) -> nn.Module:
    ids = torch.zeros(1, min(2, context), dtype=torch.int64)
    try:
        with torch.no_grad():
            out = model.eval()(ids)
    except Exception as exc:
        raise UsageError(f"the language model '{spec}' fails on a window of token ids "
                         f"({(str(exc).splitlines() or [''])[0][:160]}); it must map int64 (B, L) ids to (B, L, V) "
                         f"logits") from None
    finally:
        model.train()
    if not isinstance(out, torch.Tensor) or tuple(out.shape) != (*ids.shape, vocab_size):
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UsageError(f"the language model '{spec}' returns {shape} for {tuple(ids.shape)} ids but the "
                         f"vocabulary has {vocab_size:,} tokens; it must return (B, L, {vocab_size}) logits")
    for name, value in (("vocab_size", vocab_size), ("context", context)):
        if not hasattr(model, name):
            setattr(model, name, value)       # a user's module: what export and generate read
    return model


def _user_model(spec: str, recorded: str | None, **kwargs) -> nn.Module:
    model = call_factory(spec, "STUDENT", **kwargs)
    if recorded is not None and module_digest(spec) != recorded:
        raise UsageError(f"STUDENT={spec}: the module's source changed since this student was trained, so its "
                         f"weights may not fit; train it again, or restore the module it was trained with")
    return model


def student_build_record(spec: str) -> dict:
    """What a checkpoint adds to the keyword arguments above so the same student is rebuilt: a user module's
    source digest (the config of a transformers student is added by its stage, which holds it)."""
    return {"module_digest": module_digest(spec)} if is_module_spec(spec) else {}
