"""Request parsing from the field table (pure functions; the HTTP module covers the same rules end to end)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from app.api import MAX_SEED, REQUEST_FIELDS, Rules, parse_imagine_query, parse_openai_body
from app.config import parse_app_args
from app.http import ApiError

ARGS = parse_app_args(
    {
        "backend": "cpu",
        "image_sizes": ["128x96", "96x128"],
        "default_steps": 4,
        "max_steps": 20,
        "max_prompt_chars": 50,
        "max_images_per_request": 3,
    }
)
RULES = Rules(ARGS)


def test_defaults_fill_absent_fields():
    request = parse_imagine_query([("prompt", "a cat")], RULES)
    (job,) = request.jobs
    assert (job.width, job.height, job.steps, job.guidance_scale) == (128, 96, 4, ARGS.default_guidance_scale)
    assert job.negative_prompt is None
    assert 0 <= job.seed <= MAX_SEED
    assert request.output_format == "png"


def test_absent_seeds_are_random():
    seeds = {parse_imagine_query([("prompt", "a cat")], RULES).jobs[0].seed for _ in range(20)}
    assert len(seeds) > 1


def test_openai_images_use_consecutive_seeds_wrapping_at_two_to_the_32():
    request = parse_openai_body({"prompt": "a cat", "n": 3, "seed": MAX_SEED - 1}, RULES)
    assert [job.seed for job in request.jobs] == [MAX_SEED - 1, MAX_SEED, 0]


def test_openai_accepts_and_ignores_model_and_user():
    request = parse_openai_body({"prompt": "a cat", "model": "dall-e-3", "user": "u1"}, RULES)
    assert len(request.jobs) == 1


def test_query_numbers_accept_surrounding_spaces_and_integral_guidance():
    (job,) = parse_imagine_query([("prompt", "x"), ("steps", " 7 "), ("guidance_scale", "3")], RULES).jobs
    assert job.steps == 7 and job.guidance_scale == 3.0


@pytest.mark.parametrize("name", ["steps", "seed", "n"])
def test_integer_fields_refuse_floats_in_json(name):
    with pytest.raises(ApiError) as raised:
        parse_openai_body({"prompt": "x", name: 2.0}, RULES)
    assert raised.value.status == 400 and raised.value.param == name


def test_every_field_has_a_description_and_published_bounds_match_the_args():
    assert all(field.description for field in REQUEST_FIELDS.values())
    steps = REQUEST_FIELDS["steps"].json_schema(RULES)
    assert (steps["type"], steps["minimum"], steps["maximum"], steps["default"]) == ("integer", 1, 20, 4)
    assert REQUEST_FIELDS["prompt"].json_schema(RULES)["maxLength"] == 50


def test_the_published_request_schema_is_valid_json_schema_and_accepts_what_the_parser_accepts():
    from jsonschema import Draft202012Validator

    from app.api import request_schema

    schema = request_schema(RULES)
    for route in schema.values():
        Draft202012Validator.check_schema(route)
    body = {"prompt": "a cat", "n": 2, "size": "96x128", "steps": 20, "guidance_scale": 0.0, "model": "x"}
    Draft202012Validator(schema["images_generations"]).validate(body)
    parse_openai_body(body, RULES)
    assert list(Draft202012Validator(schema["imagine"]).iter_errors({"prompt": "a", "steps": 21}))


def test_a_model_that_needs_guidance_above_a_floor_publishes_and_enforces_it():
    from app.api import request_schema

    rules = Rules(ARGS, guidance_must_exceed=1.0)
    assert request_schema(rules)["imagine"]["properties"]["guidance_scale"]["exclusiveMinimum"] == 1.0
    with pytest.raises(ApiError, match="greater than 1 on this model") as refused:
        parse_imagine_query([("prompt", "x"), ("guidance_scale", "1")], rules)
    assert (refused.value.param, refused.value.code) == ("guidance_scale", "out_of_range")
    (job,) = parse_imagine_query([("prompt", "x"), ("guidance_scale", "1.5")], rules).jobs
    assert job.guidance_scale == 1.5


@given(
    st.dictionaries(
        st.text(max_size=12),
        st.one_of(
            st.none(),
            st.booleans(),
            st.integers(),
            st.floats(),
            st.text(max_size=60),
            st.lists(st.integers(), max_size=2),
        ),
    )
)
def test_any_json_object_is_either_a_valid_request_or_a_400(body):
    # Whatever arrives, parsing ends in a request or a 400 naming a field (never another exception).
    try:
        request = parse_openai_body(body, RULES)
    except ApiError as error:
        assert error.status == 400 and error.message
    else:
        assert 0 < len(request.jobs) <= ARGS.max_images_per_request
        assert all(1 <= job.steps <= 20 and (job.width, job.height) in ARGS.sizes for job in request.jobs)


@given(
    st.lists(
        st.tuples(
            st.sampled_from(
                [
                    "prompt",
                    "steps",
                    "seed",
                    "guidance_scale",
                    "width",
                    "height",
                    "output_format",
                    "negative_prompt",
                    "x",
                ]
            ),
            st.text(max_size=20),
        ),
        max_size=6,
    )
)
def test_any_query_string_is_either_a_valid_request_or_a_400(pairs):
    try:
        request = parse_imagine_query(pairs, RULES)
    except ApiError as error:
        assert error.status == 400 and error.message
    else:
        (job,) = request.jobs
        assert job.prompt.strip() and 0 <= job.seed <= MAX_SEED and 0 <= job.guidance_scale <= ARGS.max_guidance_scale


def refusal(parse, value) -> ApiError:
    with pytest.raises(ApiError) as raised:
        parse(value, RULES)
    assert raised.value.status == 400
    return raised.value


@pytest.mark.parametrize("name", ["steps", "seed", "n", "guidance_scale"])
def test_integers_too_large_for_any_float_are_a_400_naming_the_field(name):
    error = refusal(parse_openai_body, {"prompt": "x", name: 10**400})
    assert (error.param, error.code) == (name, "out_of_range")
    assert "(401 digits)" in error.message


@pytest.mark.parametrize("digits", ["9" * 400, "9" * 5000])
def test_query_integers_with_hundreds_of_digits_are_out_of_range(digits):
    error = refusal(parse_imagine_query, [("prompt", "x"), ("seed", digits)])
    assert (error.param, error.code) == ("seed", "out_of_range")
    assert len(error.message) < 200


@pytest.mark.parametrize("text", ["1_0", "١٢", "0x10", "1e3", "--1", ""])
def test_query_integers_are_plain_ascii_decimal(text):
    error = refusal(parse_imagine_query, [("prompt", "x"), ("steps", text)])
    assert (error.param, error.code) == ("steps", "invalid_type")


@pytest.mark.parametrize("text", ["nan", "-Infinity", "1e999"])
def test_query_guidance_that_is_not_finite_is_refused_as_such(text):
    error = refusal(parse_imagine_query, [("prompt", "x"), ("guidance_scale", text)])
    assert (error.param, error.code) == ("guidance_scale", "invalid_value")
    assert "finite" in error.message


def test_out_of_range_messages_show_the_exact_bounds():
    error = refusal(parse_imagine_query, [("prompt", "x"), ("seed", str(MAX_SEED + 1))])
    assert f"between 0 and {MAX_SEED}, got {MAX_SEED + 1}" in error.message


def test_a_lone_surrogate_in_a_prompt_is_a_400():
    error = refusal(parse_openai_body, {"prompt": "a \ud800 fox"})
    assert (error.param, error.code) == ("prompt", "invalid_value")


def test_unknown_names_are_quoted_escaped_and_cut_short_in_the_message():
    error = refusal(parse_openai_body, {"prompt": "x", "\ud800" + "k" * 500: 1})
    assert error.code == "unsupported_parameter" and len(error.param) == 64
    assert "\\ud800" in error.message and "(501 characters)" in error.message
    error.message.encode("utf-8")  # the message itself is always valid text


def test_an_edit_on_a_model_that_cannot_edit_is_a_400_naming_the_missing_piece():
    import io

    from PIL import Image

    from app.api import parse_edit_form
    from app.uploads import Upload

    buffer = io.BytesIO()
    Image.new("RGB", (128, 96)).save(buffer, format="PNG")
    upload = Upload(fields={"prompt": "a cat"}, files={"image": buffer.getvalue()})
    text_only = Rules(ARGS, tasks=("generate",), why_no_editing="model x has no compiled vae_encoder")
    with pytest.raises(ApiError, match="this model cannot do img2img: model x has no compiled vae_encoder") as refused:
        parse_edit_form(upload, text_only)
    assert (refused.value.status, refused.value.param) == (400, "image")
    (job,) = parse_edit_form(upload, RULES).jobs
    assert (job.task, job.image.size, job.strength) == ("img2img", (128, 96), ARGS.default_strength)
