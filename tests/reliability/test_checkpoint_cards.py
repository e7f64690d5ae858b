"""Issue #15 item 10: a crafted checkpoint card is refused with one FlowError naming the file and the field
(before: AttributeError, ValueError or IndexError from deep inside the loader)."""

from __future__ import annotations

import pytest
import torch

from fpga_flow import FlowError, train, zoo

pytestmark = pytest.mark.unit

GOOD = {"model": "convnet", "weight_bits": 4, "act_bits": 4, "input_bits": 8}


def _save(tmp_path, card) -> str:
    model = zoo.load("convnet").quant_model(4, 4, 8)
    p = tmp_path / "crafted.pt"
    torch.save({"state_dict": model.state_dict(), "card": card}, p)
    return str(p)


@pytest.mark.parametrize("card,field", [
    (["model", "convnet"], "card"),                           # AttributeError: 'list' has no .get
    ({**GOOD, "widths": {"conv1": "many"}}, "widths"),         # ValueError: int('many')
    ({**GOOD, "widths": {"conv1": 10 ** 6}}, "widths"),        # IndexError: channel 10 of 10
    ({**GOOD, "widths": {"no.such.layer": 3}}, "widths"),
    ({**GOOD, "widths": ["conv1", 3]}, "widths"),              # AttributeError: list has no .items
    ({**GOOD, "widths": {"conv1": 0}}, "widths"),
    ({**GOOD, "test_accuracy": "99%"}, "test_accuracy"),       # report.md formats it with :.2%
    ({**GOOD, "float_accuracy": [1]}, "float_accuracy"),
])
def test_crafted_card_is_one_flow_error_naming_file_and_field(tmp_path, card, field):
    path = _save(tmp_path, card)
    with pytest.raises(FlowError) as e:
        train.load_checkpoint("convnet", path, 4, 4, 8)
    msg = str(e.value)
    assert path in msg and repr(field) in msg and "\n" not in msg
