"""Merges reconstructed on read: merge methods, recipes, and streaming materialisation.

Typical use by the registry::

    recipe = load_recipe(path_or_yaml)              # validated; refs in recipe.vectors
    merger = Merger(recipe, base_source, [source_for(ref) for ref in recipe.vectors])
    for name, theta in materialize(merger): ...     # or LazyMerged(merger)
"""

from tvstore.merge.materialize import LazyMerged, Merger, TensorSource, materialize
from tvstore.merge.methods import METHODS, MethodSpec, get_method
from tvstore.merge.recipe import Recipe, RecipeInput, ResolvedRecipe, TensorPlan, load_recipe

__all__ = [
    "METHODS",
    "LazyMerged",
    "Merger",
    "MethodSpec",
    "Recipe",
    "RecipeInput",
    "ResolvedRecipe",
    "TensorPlan",
    "TensorSource",
    "get_method",
    "load_recipe",
    "materialize",
]
