"""One mapping of train.py flags for every target, and the rule that nothing sets one of them twice.

train.hyperparameters (a config file or INVOKE_TRAIN_HYPERPARAMETERS) and the tasks' `--set name=value` merge into
one mapping keyed by train.py's own argument names (its parser's `dest`: lr, batch_size, ...); any spelling of a flag
is accepted (lr, learning_rate, learning-rate). A name given twice, in two sources or in one under two spellings,
is an error; so is a name train.py does not take, one the target sets itself (paths, --no-resume), and one that
tuning searches. Local runs, torchrun and the EC2 host get `as_flags`, SageMaker gets `as_sagemaker`.
"""

import functools

import yaml

from configuration.values import SettingError, parse_bool

# train.py's arguments that every target sets from its own settings: who sets them instead.
SET_BY_THE_TARGET = {"data": "data.dir", "model_dir": "train.model_dir", "output_dir": "train.output_dir",
                     "checkpoint_dir": "train.checkpoint_dir", "archive": "train.archive",
                     "feature_cache_dir": "the target", "resume": "`invoke train --fresh`"}


@functools.lru_cache(maxsize=1)
def train_parser():
    """training/train.py's own parser (importing it imports torch, so only when flags are built)."""
    from training.train import get_args_parser

    return get_args_parser()


def _actions(parser):
    """{spelling: action} for every flag of the parser: its dest and each option string without dashes."""
    spellings = {}
    for action in parser._actions:   # argparse keeps no public list of its arguments
        if action.dest == "help" or not action.option_strings:
            continue
        for spelling in [action.dest] + [option.lstrip("-") for option in action.option_strings]:
            spellings[spelling] = action
    return spellings


def _is_switch(action):
    return action.nargs == 0          # store_true / store_false: a flag without a value


def _checked(action, name, value):
    """`value` converted as train.py's parser converts it; its refusal as one line."""
    if _is_switch(action):
        return parse_bool(f"hyperparameter {name}", value)
    try:
        converted = action.type(str(value)) if action.type else str(value)
    except (TypeError, ValueError):
        raise SettingError(f"hyperparameter {name}: {value!r} is not a valid --{name} "
                           f"({getattr(action.type, '__name__', 'text')})") from None
    if action.choices and converted not in action.choices:
        raise SettingError(f"hyperparameter {name}: {value!r} is not one of {', '.join(map(str, action.choices))}")
    return converted


def parse_assignments(assignments):
    """`--set name=value` texts as (name, value) pairs; the value is read as YAML (0.01, resnet18, true)."""
    pairs = []
    for text in assignments or ():
        name, equals, value = str(text).partition("=")
        if not equals or not name.strip():
            raise SettingError(f"--set {text!r}: write --set name=value, e.g. --set lr=0.01")
        try:
            pairs.append((name.strip(), yaml.safe_load(value) if value.strip() else value))
        except yaml.YAMLError:
            pairs.append((name.strip(), value))
    return pairs


def canonical_name(name, parser=None):
    """train.py's dest for a spelling of one of its flags; unknown and target-set names are one-line errors."""
    action = _actions(parser or train_parser()).get(str(name))
    if action is None:
        raise SettingError(f"hyperparameter {name!r} is not a flag of training/train.py "
                           "(`python training/train.py --help` lists them)")
    if action.dest in SET_BY_THE_TARGET:
        raise SettingError(f"hyperparameter {name!r} is set by the target: use {SET_BY_THE_TARGET[action.dest]}")
    return action.dest


def merge(sources, parser=None):
    """One {dest: value} from [(label, [(name, value), ...]), ...]; a dest given twice is an error naming both."""
    parser = parser or train_parser()
    actions, merged, given_by = _actions(parser), {}, {}
    for label, pairs in sources:
        for name, value in pairs:
            dest = canonical_name(name, parser)
            if dest in given_by:
                raise SettingError(f"hyperparameter {dest} is given twice: by {given_by[dest]} and by {label} "
                                   f"({name}={value!r}); keep one")
            given_by[dest] = f"{label} ({name}={value!r})"
            merged[dest] = _checked(actions[dest], name, value)
    return merged


def from_settings(train_settings, assignments=(), parser=None):
    """train.hyperparameters merged with the task's `--set` assignments."""
    return merge([("train.hyperparameters", train_settings.hyperparameters.items()),
                  ("--set", parse_assignments(assignments))], parser)


def check_not_tuned(hyperparameters, tuned_names, parser=None):
    """Tuning searches `tuned_names`: a fixed value for one of them as well is a setting given twice."""
    tuned = {canonical_name(name, parser): name for name in tuned_names}
    for dest in hyperparameters:
        if dest in tuned:
            raise SettingError(f"hyperparameter {dest} is given twice: as a fixed value and as the range "
                               f"tuning.{tuned[dest]} searches; remove one (an empty range leaves it out)")


def _long_option(action):
    return next(option for option in action.option_strings if option.startswith("--"))


def as_flags(hyperparameters, parser=None):
    """train.py's command-line arguments for the mapping: `--lr 0.01`, a switch alone when true."""
    actions, flags = _actions(parser or train_parser()), []
    for dest, value in hyperparameters.items():
        action = actions[dest]
        if _is_switch(action):
            flags += [_long_option(action)] if value else []
        else:
            flags += [_long_option(action), str(value)]
    return flags


def as_sagemaker(hyperparameters, parser=None):
    """The mapping as SageMaker hyperparameters, which its drivers pass on as `--<dest> <value>`."""
    actions = _actions(parser or train_parser())
    for dest in hyperparameters:
        if _is_switch(actions[dest]):
            raise SettingError(f"hyperparameter {dest} is an on/off flag, which SageMaker cannot pass (it passes "
                               "every hyperparameter as `--name value`): leave it out for SageMaker targets")
    return dict(hyperparameters)
