import dataclasses

import pytest

from plugins.recipe import RECIPES_DIR, Recipe
from plugins.tricks.lr_schedule import warmup_cosine_factor


@pytest.mark.parametrize("name", sorted(p.stem for p in RECIPES_DIR.glob("*.yaml")))
def test_every_shipped_recipe_loads_validates_and_round_trips(name, tmp_path):
    recipe = Recipe.preset(name)
    assert recipe.name == name
    assert Recipe.from_yaml(recipe.to_yaml()) == recipe, "yaml text"
    path = tmp_path / "r.yaml"
    recipe.to_yaml(path)
    assert Recipe.from_yaml(path) == recipe and Recipe.from_yaml(str(path)) == recipe, "yaml file"
    assert Recipe.from_dict(recipe.to_dict()) == recipe
    assert hash(Recipe.from_dict(recipe.to_dict())) == hash(recipe)


def test_presets_available():
    assert {"baseline", "efficient", "paper"} <= set(Recipe.available_presets())


def test_baseline_is_the_papers_baseline_with_every_trick_off():
    r = Recipe.preset("baseline")
    assert (r.variant, r.depth, r.schedule, r.step_milestones, r.step_gamma) == (
        "b",
        50,
        "step",
        (30, 60, 90),
        0.1,
    )
    assert (r.base_lr, r.batch_size, r.epochs, r.warmup_epochs) == (0.1, 256, 120, 0)
    assert (r.momentum, r.nesterov, r.weight_decay) == (0.9, True, 1e-4)
    assert not (r.no_bias_decay or r.zero_gamma or r.amp)
    assert (r.label_smoothing, r.mixup_alpha, r.distill_teacher) == (0.0, 0.0, None)
    assert dataclasses.replace(r, name=None) == Recipe(), "the dataclass defaults are the baseline"


def test_paper_preset_turns_everything_on():
    r = Recipe.preset("paper")
    assert (r.variant, r.schedule, r.warmup_epochs, r.batch_size, r.scaled_lr()) == (
        "d",
        "cosine",
        5,
        1024,
        0.4,
    )
    assert r.no_bias_decay and r.zero_gamma and r.amp
    assert (r.label_smoothing, r.label_smoothing_form, r.mixup_alpha, r.distill_temperature) == (
        0.1,
        "paper",
        0.2,
        20.0,
    )
    assert r.epochs == 200


def test_efficient_preset():
    r = Recipe.preset("efficient")
    assert (r.variant, r.schedule, r.batch_size, r.warmup_epochs) == ("d", "step", 1024, 5)
    assert r.no_bias_decay and r.zero_gamma and r.amp and r.label_smoothing == 0 and r.mixup_alpha == 0


def test_lr_at_step_baseline():
    r = Recipe.preset("baseline")
    spe = 10
    expected = {1: 0.1, 300: 0.1, 301: 0.01, 600: 0.01, 601: 0.001, 901: 1e-4, 1200: 1e-4}
    for i, lr in expected.items():
        assert r.lr_at(i, spe) == pytest.approx(lr, rel=1e-12), f"update {i}"
    assert (
        r.total_steps(spe) == 1200 and r.warmup_steps(spe) == 0 and r.milestone_steps(spe) == (300, 600, 900)
    )


def test_lr_at_paper_warmup_and_cosine():
    r = Recipe.preset("paper")
    spe = 10
    total, warmup = 2000, 50
    assert (r.total_steps(spe), r.warmup_steps(spe)) == (total, warmup)
    assert r.lr_at(1, spe) == pytest.approx(0.4 / 50, rel=1e-12)
    assert r.lr_at(50, spe) == pytest.approx(0.4, rel=1e-12)
    assert r.lr_at(1025, spe) == pytest.approx(0.4 * 0.5, rel=1e-12)
    assert r.lr_at(total, spe) == 0.0
    for i in (51, 777, 1999):
        assert r.lr_at(i, spe) == pytest.approx(0.4 * warmup_cosine_factor(i, total, warmup), rel=1e-12)


def test_scientific_notation_in_yaml_is_a_float():
    assert Recipe.from_yaml("weight_decay: 5e-5\n").weight_decay == 5e-5


def test_with_overrides_is_validated_and_returns_a_new_recipe():
    base = Recipe()
    changed = base.with_overrides(schedule="cosine", warmup_epochs=5)
    assert (changed.schedule, changed.warmup_epochs, base.schedule) == ("cosine", 5, "step")
    with pytest.raises(ValueError, match="label_smoothing"):
        base.with_overrides(label_smoothing=1.0)
    with pytest.raises(ValueError, match="learning_rate"):
        base.with_overrides(learning_rate=0.1)


def test_unknown_key_lists_accepted_fields():
    with pytest.raises(ValueError, match="lr_base") as info:
        Recipe.from_yaml("lr_base: 0.1\n")
    assert "base_lr" in str(info.value) and "mixup_alpha" in str(info.value)


def test_variant_is_case_insensitive():
    """"ResNet-D" in the paper: variant "D" means "d", in code and in yaml."""
    assert Recipe(variant="D").variant == "d"
    assert Recipe.from_yaml("variant: B\n").variant == "b"
    assert Recipe(variant="D") == Recipe(variant="d")


def test_cosine_recipe_ignores_milestones_beyond_short_runs():
    Recipe(schedule="cosine", epochs=10).validate()  # default milestones (30, 60, 90) are unused here


INVALID = [
    ("variant", "e"),
    ("depth", 20),
    ("base_lr", -0.1),
    ("base_lr", 0.0),
    ("base_batch_size", 0),
    ("batch_size", 0),
    ("batch_size", 2.5),
    ("epochs", 0),
    ("warmup_epochs", 121),
    ("warmup_epochs", -1),
    ("schedule", "poly"),
    ("step_milestones", (0, 30)),
    ("step_milestones", (30, 130)),
    ("step_milestones", (60, 30)),
    ("step_milestones", 30),
    ("step_milestones", (float("nan"),)),
    ("step_milestones", ("30",)),
    ("step_milestones", (True,)),
    ("step_gamma", 0.0),
    ("min_lr_ratio", 1.5),
    ("momentum", 1.0),
    ("weight_decay", -1e-4),
    ("no_bias_decay", "yes"),
    ("zero_gamma", 1),
    ("amp", None),
    ("nesterov", "true"),
    ("label_smoothing", 1.0),
    ("label_smoothing", -0.1),
    ("label_smoothing_form", "gluon"),
    ("mixup_alpha", -0.2),
    ("distill_teacher", ""),
    ("distill_temperature", 0.0),
    ("name", 3),
]


@pytest.mark.parametrize(("field", "value"), INVALID, ids=[f"{f}={v!r}" for f, v in INVALID])
def test_each_invalid_field_is_rejected_with_its_name(field, value):
    with pytest.raises(ValueError, match=f"Recipe.{field} must be") as info:
        Recipe(**{field: value}).validate()
    assert repr(value) in str(info.value)
    with pytest.raises(ValueError, match=field):
        Recipe.from_dict({**Recipe().to_dict(), field: list(value) if isinstance(value, tuple) else value})


def test_fractional_milestones_are_epochs_converted_with_the_one_rounding_rule(tmp_path):
    # a detector's schedule: 800 iterations of 250 per epoch, decay at 75 % and 90 % of the run
    (tmp_path / "det.yaml").write_text("schedule: step\nepochs: 4\nstep_milestones: [2.4, 2.88]\nwarmup_epochs: 0.32\n")
    r = Recipe.load(str(tmp_path / "det.yaml"))
    assert r.step_milestones == (2.4, 2.88)
    plan = r.lr_schedule(250, total_steps=800)
    assert (plan.milestones, plan.warmup_steps, plan.total_steps) == ((600, 720), 80, 800)
    assert r.milestone_steps(5) == (12, 14)  # 2.4 * 5 = 12; 2.88 * 5 = 14.4 -> 14
    assert Recipe.from_yaml(r.to_yaml()) == r


def test_nesterov_needs_momentum():
    with pytest.raises(ValueError, match="nesterov"):
        Recipe(momentum=0.0).validate()
    Recipe(momentum=0.0, nesterov=False).validate()


def test_load_takes_a_preset_or_a_yaml_path_and_says_what_is_accepted(tmp_path):
    assert Recipe.load("paper") == Recipe.preset("paper")
    (tmp_path / "r.yaml").write_text("label_smoothing: 0.2\n")
    assert Recipe.load(str(tmp_path / "r.yaml")).label_smoothing == 0.2
    with pytest.raises(ValueError, match=r"not a preset nor a file; accepted: one of \(.*'paper'.*\) or a recipe"):
        Recipe.load("nope")
    (tmp_path / "bad.yaml").write_text("label_smoothin: 0.2\n")
    with pytest.raises(ValueError, match=r"unknown Recipe field\(s\) \['label_smoothin'\]"):
        Recipe.load(str(tmp_path / "bad.yaml"))


def test_load_recipe_lays_overrides_over_it_and_names_where_it_came_from(tmp_path):
    from plugins.recipe import load_recipe

    (tmp_path / "r.yaml").write_text("label_smoothing: 0.2\n")
    assert load_recipe(tmp_path / "r.yaml") == Recipe(label_smoothing=0.2), "a path object"
    assert load_recipe("paper", {"epochs": 10}) == Recipe.preset("paper").with_overrides(epochs=10)
    assert load_recipe("paper", {}) == Recipe.preset("paper")
    with pytest.raises(ValueError, match=r"^--recipe nope: not a preset nor a file; accepted: one of"):
        load_recipe("nope", source="--recipe nope")
    with pytest.raises(ValueError, match=r"^not a preset nor a file"):
        load_recipe("nope")
    with pytest.raises(ValueError, match=r"^--recipe paper: Recipe\.epochs must be an integer >= 1, got 0"):
        load_recipe("paper", {"epochs": 0}, source="--recipe paper")
    with pytest.raises(ValueError, match=r"^--recipe paper: unknown Recipe field\(s\) \['epoch'\]"):
        load_recipe("paper", {"epoch": 3}, source="--recipe paper")


DETECTION = ("mmengine", "detectron2")


@pytest.mark.parametrize("framework", DETECTION)
def test_not_applied_lists_only_the_fields_that_do_something(framework):
    from plugins.recipe import not_applied

    config_decides = ("epochs", "batch_size", "variant", "depth")
    # distillation off: its temperature means nothing, whatever its value
    assert not_applied(Recipe(distill_temperature=5.0), framework, cuda=False) == config_decides
    assert not_applied(Recipe(mixup_alpha=0.2), framework, cuda=False) == (*config_decides, "mixup_alpha")
    assert not_applied(Recipe(distill_teacher="teacher.pth"), framework, cuda=False) == (
        *config_decides, "distill_teacher", "distill_temperature")
    assert not_applied(Recipe(amp=True), framework, cuda=False) == (*config_decides, "amp")
    assert not_applied(Recipe(amp=True), framework, cuda=True) == config_decides, "AMP with CUDA is applied"


def test_not_applied_is_one_list_for_every_detection_framework_and_timm_applies_all_but_detection_mixup():
    from plugins.recipe import FRAMEWORKS, not_applied

    recipes = [Recipe.preset(name) for name in Recipe.available_presets()]
    recipes += [Recipe(distill_teacher="t", mixup_alpha=0.4, amp=True), Recipe(distill_temperature=2.0)]
    for recipe in recipes:
        for cuda in (False, True):
            lists = {framework: not_applied(recipe, framework, cuda=cuda) for framework in DETECTION}
            assert len(set(lists.values())) == 1, (recipe, lists)
            assert not_applied(recipe, "timm", cuda=cuda) == (), "tricks-train applies every classification field"
    detection = Recipe(det_mixup_alpha=1.5, det_mixup_fixed_ratio=0.5)
    assert not_applied(detection, "timm") == ("det_mixup_alpha", "det_mixup_stop_fraction", "det_mixup_fixed_ratio")
    assert "det_mixup_alpha" not in not_applied(detection, "detectron2"), "the detectors apply it"
    assert set(FRAMEWORKS) == {"timm", *DETECTION}
    with pytest.raises(ValueError, match=r"framework must be one of \('timm', 'mmengine', 'detectron2'\), got 'mmdet'"):
        not_applied(Recipe(), "mmdet")
    with pytest.raises(TypeError, match="recipe must be a plugins.recipe.Recipe, got dict"):
        not_applied(Recipe().to_dict(), "timm")
