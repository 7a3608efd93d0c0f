"""The adapters' preparation of the average draws its batches from a loader of its own."""

import torch
from torch.utils.data import DataLoader, TensorDataset

from sema.integrations._swap import fresh_loader


def test_fresh_loader_leaves_the_training_loader_alone():
    data = TensorDataset(torch.arange(12.0))
    train = DataLoader(data, batch_size=2, shuffle=True, generator=torch.Generator().manual_seed(3))
    expected = [b[0].tolist() for b in DataLoader(data, batch_size=2, shuffle=True,
                                                  generator=torch.Generator().manual_seed(3))]
    batches = iter(train)
    first = next(batches)[0].tolist()
    own = fresh_loader(train)
    assert own is not train and own.dataset is data and own.batch_size == 2
    drawn = [b[0].tolist() for b in own]  # the preparation's pass
    assert sorted(x for b in drawn for x in b) == list(range(12))
    assert [first] + [b[0].tolist() for b in batches] == expected  # training's epoch goes on unchanged
    assert [b[0].tolist() for b in fresh_loader(train)] == drawn  # a fixed seed: the same batches every time
    assert fresh_loader([1, 2]) == [1, 2]  # not a DataLoader: used as it is


def test_eval_swap_holds_one_context_and_says_whether_it_is_in():
    import sema
    from sema.integrations._swap import EvalSwap

    model = torch.nn.Linear(2, 1)
    avg = sema.EMA(model, decay=0.5)
    with torch.no_grad():
        model.weight.add_(1.0)
    own, average = model.weight.detach().clone(), avg.average.weight.detach().clone()
    swap = EvalSwap()
    assert not swap.active
    swap.enter(avg)
    swap.enter(avg)  # already in: a no-op
    assert swap.active and torch.equal(model.weight, average)
    swap.exit()
    swap.exit()
    assert not swap.active and torch.equal(model.weight, own)
    swap.enter(None)  # no averager yet: nothing to swap
    assert not swap.active


def test_a_streaming_dataset_is_read_in_its_own_order_and_ema_without_bn_work_builds_no_loader():
    import sema
    from sema.integrations._swap import prepare_for_eval

    class Stream(torch.utils.data.IterableDataset):
        def __iter__(self):
            return iter(torch.arange(6.0).view(6, 1))

    train = torch.utils.data.DataLoader(Stream(), batch_size=2)
    assert [b.flatten().tolist() for b in fresh_loader(train)] == [[0.0, 1.0], [2.0, 3.0], [4.0, 5.0]]
    model = torch.nn.Sequential(torch.nn.Linear(1, 2), torch.nn.BatchNorm1d(2))
    seen = []
    assert prepare_for_eval(sema.EMA(model), train, lambda batch: seen.append(batch), model)
    assert seen == []  # no re-estimation asked for: nothing read
    prepare_for_eval(sema.EMA(model, bn_update_batches=2), train, lambda batch: seen.append(batch) or model(batch),
                     model)
    assert [b.flatten().tolist() for b in seen] == [[0.0, 1.0], [2.0, 3.0]]
