"""Each setting is declared once, on the work side: every Dagster config takes its fields and defaults
from the settings class (or function) it configures, and these tests keep the two equal field for field."""

import dataclasses
import inspect

from thread_embed_pipeline.evaluation.eval_sets import build_eval_sets
from thread_embed_pipeline.evaluation.runner import ApiSettings
from thread_embed_pipeline.orchestration.eval_assets import DevEvalSetsConfig, EvalSetsConfig
from thread_embed_pipeline.orchestration.resources import EmbeddingApisResource
from thread_embed_pipeline.orchestration.source_chain import PAIR_BUILDER_FIELDS, PairsConfig, TextConfig, pair_builder_settings
from thread_embed_pipeline.orchestration.training_assets import ModelConfig
from thread_embed_pipeline.pairs.builders import PairBuilderSettings
from thread_embed_pipeline.text import TextSettings
from thread_embed_pipeline.training.settings import CPU_RECIPE, TrainingSettings


def _fields(settings_cls) -> set[str]:
    return {f.name for f in dataclasses.fields(settings_cls)}


def test_model_config_is_training_settings_with_the_cpu_recipe():
    config_only = {"model_name", "small_dims_weigh_more", "nproc_per_node", "callbacks"}  # how to launch, not how to train
    assert set(ModelConfig.model_fields) - config_only == _fields(TrainingSettings)
    # the defaults are the CPU recipe's, plus the small-dims weighting the switch adds
    assert ModelConfig().settings() == dataclasses.replace(CPU_RECIPE, matryoshka_weights=(1.0, 1.0, 2.0, 3.0))
    assert ModelConfig(small_dims_weigh_more=False).settings() == CPU_RECIPE
    # a value set in the config reaches the settings
    assert ModelConfig(logging_steps=3, frozen_layers=2).settings().logging_steps == 3


def test_pairs_config_defaults_are_the_pair_builders():
    shared = set(PairsConfig.model_fields) & _fields(PairBuilderSettings)
    assert set(PAIR_BUILDER_FIELDS) == shared and len(shared) == 5
    assert pair_builder_settings(PairsConfig()) == PairBuilderSettings()
    assert pair_builder_settings(PairsConfig(thread_positive_messages=3), require_question_mark=False) == PairBuilderSettings(thread_positive_messages=3, require_question_mark=False)


def test_text_config_is_text_settings():
    assert set(TextConfig.model_fields) == _fields(TextSettings)
    assert TextConfig().settings() == TextSettings()


def test_eval_sets_config_fields_are_keywords_of_the_builder_with_its_defaults():
    params = inspect.signature(build_eval_sets).parameters
    renamed = {"max_queries_per_set": "max_queries"}
    for config_cls in (EvalSetsConfig, DevEvalSetsConfig):
        for name in config_cls.model_fields:
            if name == "protocols":
                continue  # build_protocol_eval_sets' own keyword
            assert renamed.get(name, name) in params, f"{config_cls.__name__}.{name} is not a keyword of build_eval_sets"
    # where the configs differ from the builder, it is a deliberate, documented default
    def norm(value):
        return list(value) if isinstance(value, (list, tuple)) else value

    differs = {
        name: (field.default, params[renamed.get(name, name)].default)
        for name, field in EvalSetsConfig.model_fields.items()
        if name != "protocols" and norm(field.default) != norm(params[renamed.get(name, name)].default)
    }
    assert differs == {"max_queries_per_set": (300, None)}  # the builder takes every query; the asset caps each set


def test_embedding_api_resource_fields_are_the_api_settings():
    assert set(EmbeddingApisResource.model_fields) == _fields(ApiSettings)
    resource = EmbeddingApisResource(openai_api_key="k1", voyage_base_url="http://127.0.0.1:9")
    assert resource.settings() == ApiSettings(openai_api_key="k1", voyage_base_url="http://127.0.0.1:9")


def test_api_settings_come_from_one_table_of_environment_variables():
    settings = ApiSettings.from_environment({"OPENAI_API_KEY": "sk-test", "VOYAGE_BASE_URL": "http://127.0.0.1:9", "VOYAGE_API_KEY": ""})
    assert settings == ApiSettings(openai_api_key="sk-test", voyage_base_url="http://127.0.0.1:9")
